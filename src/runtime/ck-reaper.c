/*
 * ck-reaper: the keeper of a task's init or an exec process, as containerd's shim keeps one.
 * It becomes a child subreaper, runs `runc ... run|exec --detach --pid-file PIDFILE ...`
 * (runc exits once the process runs, which then is re-parented to this keeper), waits for
 * that process and leaves its exit status and the time it ended in EXITFILE (written to
 * EXITFILE.tmp, then renamed), exiting with the status: a killed process as 128 + its signal,
 * as runc reports one. When runc itself fails, its own status is left instead (and when it
 * cannot be run at all, 127 and why, in runc's --log file).
 *
 * Output (with --relay: stdout and stderr are the client's FIFOs): the process gets a pipe of
 * the keeper's instead (one for both when they are the same FIFO) and the keeper copies it
 * on, as the shim does; it keeps no other hold on the client's FIFOs. Once the process has
 * ended, the copy goes on until nothing holds those pipes or for at most 2 s (the shim's wait
 * at an exec's deletion), then the keeper exits and the client's FIFOs are let go: a
 * background process the exec left (`sh -c 'daemon &'`) may hold its pipe, not the client's
 * FIFO, so neither the exec's end nor the client's wait for its output's end waits for it.
 * What the FIFO's reader does not take is held back as it would be on the FIFO itself. The
 * status is left once the copy is done and the FIFO's reader has taken it (within those 2 s),
 * as the keeper exits, so whoever reads it finds the output delivered: a client may close its
 * reader as soon as it hears of the end (ctr 1.6 does). Nothing is copied before runc has left, and nothing at all when runc
 * fails (its own error, which it also prints, is the client's through ckd's answer), as the
 * shim starts its copy only after runc. A logging program's pipes go to the process as they
 * are.
 * Usage: ck-reaper [--relay] EXITFILE PIDFILE RUNC [ARGS...]
 *
 * On a console (ck-reaper --console SOCK TTYSOCK DIR PIDFILE COLS ROWS RUNC [ARGS...]), it is the
 * console's keeper, as containerd's shim keeps one: runc is given `--console-socket TTYSOCK`
 * among ARGS (`run|exec --detach`), and the keeper listens there, takes the console's master
 * runc sends (SCM_RIGHTS, from its own user only) and relays it: the master's output to fd 3
 * (the process's stdout; paced: while stdout does not take it, the master is not read and
 * the container waits; a reader gone, the rest is dropped), fd 4 (stdin's reader) into the
 * master from `start` on, its end typed as ^D (twice after a partial line). fd 5 is ckd's
 * writer holding stdin open, let go at `closeio` or the end. Each of fds 3-5 may be absent.
 * ckd speaks to it on SOCK (in a directory of this user's own, closed to others), one request
 * per line, each answered `ok`:
 *   start          the process runs its program: stdin flows
 *   closeio        the hold on stdin lets go (CloseIO)
 *   resize C R     the console's size (TIOCSWINSZ on the master; before it arrives, the
 *                  size it gets: COLS x ROWS until then, or, given 0 0, the size runc
 *                  made it, the process spec's consoleSize)
 *   proc PID       accepted (the pty keeper's paced copy used it)
 * Once the process has ended and its output has been copied out of the master (every holder
 * of the console gone) and taken by stdout's reader (a FIFO that still holds some is waited
 * on: a client may close its reader as soon as it hears of the end), or a second after the
 * end for a reader that lags, it leaves runc's last words (what runc wrote, its last 4 KiB) in DIR/console.err and
 * the status and the time the process ended in DIR/exit, and tells every connection, then
 * and later, `exit STATUS`. It stays while a lagging reader still takes the rest, then
 * removes SOCK and exits with the status.
 *
 * It closes every descriptor it inherited past stdio (on a console, past fd 5) first, and is
 * not ended by TERM, HUP or INT sent to it alone (no-op handlers, reset to the default for
 * runc by exec).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static void ignore(int sig) { (void)sig; }

/* Closes every descriptor past `keep` (2: past stdio). */
static void close_inherited(int keep) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return;
  int self = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name);
    if (fd > keep && fd != self) close(fd);
  }
  closedir(d);
}

/* TERM, HUP and INT sent to the keeper alone do not end it (no-op handlers, reset to the
   default for runc by exec); a write to a reader gone is an error, not a signal. */
static void keeper_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = ignore;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

static int status_of(int ws) {
  if (WIFEXITED(ws)) return WEXITSTATUS(ws);
  if (WIFSIGNALED(ws)) return 128 + WTERMSIG(ws);
  return 255;
}

/* When the status was known (the process reaped), as left after it in EXITFILE. */
static struct timespec ended_at;
static int ended_known;

static void mark_ended(void) {
  if (!ended_known && clock_gettime(CLOCK_REALTIME, &ended_at) == 0) ended_known = 1;
}

/* EXITFILE: "STATUS SECONDS.NANOSECONDS\n" (the time the process ended, not the keeper). */
static void write_exit(const char *exit_file, int status) {
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", exit_file) >= (int)sizeof tmp) return;
  mark_ended();
  FILE *f = fopen(tmp, "w");
  if (f) {
    fprintf(f, "%d %lld.%09ld\n", status, (long long)ended_at.tv_sec, (long)ended_at.tv_nsec);
    if (fclose(f) == 0) rename(tmp, exit_file);
  }
}

static void leave(const char *exit_file, int status) {
  write_exit(exit_file, status);
  exit(status);
}

/* One output stream copied from the process's pipe (src) to the client's descriptor (dst). */
struct relay {
  int src, dst;
  char buf[65536];
  size_t off, len;
};

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void relay_close(struct relay *r) {
  if (r->src >= 0) close(r->src);
  if (r->dst >= 0) close(r->dst);
  r->src = r->dst = -1;
  r->off = r->len = 0;
}

/* Reads what is there (when the buffer is empty) and writes what it can; never blocks. */
static void relay_step(struct relay *r, short revents_src, short revents_dst) {
  if (r->src < 0) return;
  if (r->len == 0 && (revents_src & (POLLIN | POLLHUP | POLLERR))) {
    ssize_t n = read(r->src, r->buf, sizeof r->buf);
    if (n == 0) {
      /* Every writer gone: so is the client's stream, once its reader has what the FIFO
         holds (relay_settle). */
      close(r->src);
      r->src = -1;
      return;
    }
    if (n < 0) {
      if (errno != EINTR && errno != EAGAIN) relay_close(r);
      return;
    }
    r->off = 0;
    r->len = (size_t)n;
  }
  if (r->len > 0 && ((revents_dst & (POLLOUT | POLLERR | POLLHUP)) || revents_src)) {
    ssize_t n = write(r->dst, r->buf + r->off, r->len);
    if (n < 0) {
      /* No reader left (EPIPE): the process's next write fails as it would on the FIFO. */
      if (errno != EINTR && errno != EAGAIN) relay_close(r);
      return;
    }
    r->off += (size_t)n;
    r->len -= (size_t)n;
  }
}

/* What a FIFO (or pipe) holds that its reader has not taken; 0 once no reader has it open
   (its write end polls POLLERR): nobody will take it (a detached ctr run that went away). */
static int fifo_unread(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLOUT};
  if (poll(&p, 1, 0) == 1 && (p.revents & POLLERR)) return 0;
  int unread = 0;
  return ioctl(fd, FIONREAD, &unread) == 0 ? unread : 0;
}

/* A relay whose process's end of the pipe has ended lets the client's FIFO go: at once while
   the process runs; once it has ended, when the FIFO's reader has taken all of it (ctr 1.6
   closes its reader as soon as Wait answers, so what the FIFO still held then was lost). */
static void relay_settle(struct relay *r, int ended) {
  if (r->src >= 0 || r->dst < 0) return;
  if (ended && fifo_unread(r->dst) > 0) return;
  close(r->dst);
  r->dst = -1;
}

/* Gives stdio descriptor fd a relay when it is a FIFO or pipe; its pipe's write end in *child. */
static void relay_open(struct relay *r, int fd, int *child) {
  struct stat st;
  r->src = r->dst = *child = -1;
  r->off = r->len = 0;
  if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) return;
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return;
  int dst = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (dst < 0) {
    close(p[0]);
    close(p[1]);
    return;
  }
  fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK);
  fcntl(dst, F_SETFL, fcntl(dst, F_GETFL) | O_NONBLOCK);
  r->src = p[0];
  r->dst = dst;
  *child = p[1];
}

static pid_t read_pid(const char *file) {
  FILE *f = fopen(file, "r");
  if (!f) return 0;
  long pid = 0;
  if (fscanf(f, "%ld", &pid) != 1) pid = 0;
  fclose(f);
  return pid > 0 ? (pid_t)pid : 0;
}

/* How long the copy of the output may go on once the process has ended (the shim's wait). */
#define DRAIN_MS 2000
/* How often, meanwhile, a FIFO that still holds output is looked at (its reader's reads wake
   no writer's poll); the console's exit waits the same way. */
#define UNREAD_POLL_MS 5

static int console_main(int argc, char **argv);

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--console") == 0) return console_main(argc - 1, argv + 1);
  int relaying = 0;
  if (argc > 1 && strcmp(argv[1], "--relay") == 0) {
    relaying = 1;
    argv++;
    argc--;
  }
  if (argc < 4) {
    fprintf(stderr, "usage: ck-reaper [--relay] EXITFILE PIDFILE RUNC [ARGS...]\n");
    return 2;
  }
  const char *exit_file = argv[1];
  const char *pid_file = argv[2];
  close_inherited(2);
  keeper_signals();
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    perror("ck-reaper: PR_SET_CHILD_SUBREAPER");
    leave(exit_file, 255);
  }
  sigset_t chld, old;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, &old);
  int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) {
    perror("ck-reaper: signalfd");
    leave(exit_file, 255);
  }
  struct relay out[2];
  int child_end[2] = {-1, -1};
  out[0].src = out[0].dst = out[1].src = out[1].dst = -1;
  out[0].off = out[0].len = out[1].off = out[1].len = 0;
  if (relaying) {
    relay_open(&out[0], 1, &child_end[0]);
    /* stderr the same FIFO as stdout: one pipe for both, their writes kept in order. */
    struct stat a, b;
    if (fstat(1, &a) == 0 && fstat(2, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino && child_end[0] >= 0) child_end[1] = child_end[0];
    else relay_open(&out[1], 2, &child_end[1]);
  }
  pid_t runc = fork();
  if (runc < 0) leave(exit_file, 255);
  if (runc == 0) {
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGPIPE, SIG_DFL);
    for (int i = 0; i < 2; i++) {
      if (child_end[i] >= 0 && dup2(child_end[i], i + 1) < 0) _exit(127);
    }
    execvp(argv[3], &argv[3]);
    /* runc could not be run: said where ckd reads runc's own errors (its --log file). */
    int e = errno;
    for (int i = 4; i + 1 < argc; i++) {
      if (strcmp(argv[i], "--log") != 0) continue;
      FILE *log = fopen(argv[i + 1], "a");
      if (log) {
        fprintf(log, "{\"level\":\"error\",\"msg\":\"ck-reaper: cannot run %s: %s\"}\n", argv[3], strerror(e));
        fclose(log);
      }
      break;
    }
    _exit(127);
  }
  if (child_end[0] >= 0) close(child_end[0]);
  if (child_end[1] >= 0 && child_end[1] != child_end[0]) close(child_end[1]);
  /* Only runc and the process hold the client's stdin and what we relay (an output whose
     process closed it ends for the client then, not when we exit). */
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, 0);
    if (out[0].src >= 0) dup2(null, 1);
    if (out[1].src >= 0 || child_end[1] >= 0) dup2(null, 2);
    if (null > 2) close(null);
  }
  /* Until runc has left, only runc is waited for; then every child that comes (runc's,
     re-parented here) is reaped and the exec's status kept. */
  int runc_ws = 0, runc_done = 0, status = -1;
  pid_t proc = 0;
  long long deadline = -1;
  for (;;) {
    if (status < 0) {
      int st;
      pid_t p;
      while (status < 0 && (p = waitpid(runc_done ? -1 : runc, &st, WNOHANG)) != 0) {
        if (p < 0) {
          if (errno == EINTR) continue;
          if (!runc_done) {
            status = 255;
            break;
          }
          /* No child left without the process seen: it was not re-parented here, or runc
             was killed before it started one. */
          status = WIFEXITED(runc_ws) ? 255 : status_of(runc_ws);
          break;
        }
        if (!runc_done) {
          runc_done = 1;
          runc_ws = st;
          /* runc's own failure (its error paths stop the process first): its status, and
             nothing of what was written is copied: runc's own words (the client has them in
             the error), as containerd's shim copies only once runc has started the process. */
          if (WIFEXITED(st) && WEXITSTATUS(st) != 0) {
            status = WEXITSTATUS(st);
            relay_close(&out[0]);
            relay_close(&out[1]);
          }
          /* runc done, or killed under the running process: the process is kept all the same
             (re-parented here as runc left), found by the pid runc wrote; without one, the
             keeper stays until no child is left. */
          else proc = read_pid(pid_file);
        } else if (proc != 0 && p == proc) {
          status = status_of(st);
        }
      }
      if (status >= 0) {
        mark_ended();
        deadline = now_ms() + DRAIN_MS;
      }
    } else {
      /* Ended: whatever else comes here is still reaped while the output drains. */
      while (waitpid(-1, NULL, WNOHANG) > 0) {
      }
    }
    relay_settle(&out[0], status >= 0);
    relay_settle(&out[1], status >= 0);
    if (status >= 0 && ((out[0].dst < 0 && out[1].dst < 0) || now_ms() >= deadline)) leave(exit_file, status);
    struct pollfd fds[5];
    int n = 0;
    fds[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    int at[2][2];
    for (int i = 0; i < 2; i++) {
      at[i][0] = at[i][1] = -1;
      /* Copied once runc has left (the process kept in the pipe meanwhile). */
      if (out[i].src < 0 || !runc_done) continue;
      if (out[i].len == 0) {
        at[i][0] = n;
        fds[n++] = (struct pollfd){.fd = out[i].src, .events = POLLIN};
      } else {
        at[i][1] = n;
        fds[n++] = (struct pollfd){.fd = out[i].dst, .events = POLLOUT};
      }
    }
    int timeout = -1;
    if (status >= 0) {
      long long left = deadline - now_ms();
      timeout = left < 0 ? 0 : (int)left;
      /* A FIFO's reader taking what it holds wakes no writer's poll: looked at meanwhile. */
      int settling = (out[0].src < 0 && out[0].dst >= 0) || (out[1].src < 0 && out[1].dst >= 0);
      if (settling && timeout > UNREAD_POLL_MS) timeout = UNREAD_POLL_MS;
    }
    if (poll(fds, n, timeout) < 0) {
      if (errno != EINTR) leave(exit_file, status >= 0 ? status : 255);
      continue;
    }
    if (fds[0].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {
      }
    }
    for (int i = 0; i < 2; i++) {
      short rs = at[i][0] >= 0 ? fds[at[i][0]].revents : 0;
      short rd = at[i][1] >= 0 ? fds[at[i][1]].revents : 0;
      if (rs || rd) relay_step(&out[i], rs, rd);
    }
  }
}

/* ---- On a console ---------------------------------------------------------------------- */

#define OUT_FD 3
#define IN_FD 4
#define HOLDER_FD 5
/* Output kept for a reader that lags: read from the master only while this is not full. */
#define CONSOLE_BUF 65536
/* How long after the process's end its exit waits for the output to be copied out. */
#define CONSOLE_EXIT_WAIT_MS 1000
#define MAX_CLIENTS 16
#define ERR_TAIL 4096

struct client {
  int fd;
  char buf[256];
  size_t len;
};

struct console {
  int master; /* -1 until runc sends it, and once it has nothing more */
  int out;    /* stdout, -1 once its reader is gone (what comes then is dropped) */
  int out_fifo; /* stdout is a FIFO (or pipe): what it holds is not yet its reader's */
  int in;     /* stdin, -1 when there is none or it ended */
  int holder; /* ckd's writer holding stdin open, until closeio or the end */
  int started;
  unsigned short cols, rows;
  char obuf[CONSOLE_BUF];
  size_t ooff, olen;
  char ibuf[4096];
  size_t ioff, ilen;
  unsigned char last_in; /* the last byte typed: ^D ends input only at a line's start */
  int eof_typed;
  struct client clients[MAX_CLIENTS];
  char exit_line[32]; /* once said */
  char err[ERR_TAIL];  /* runc's last words */
  size_t err_len;
};

static int valid_fd(int fd) { return fcntl(fd, F_GETFD) != -1; }

/* Whether stdout's reader has taken all that was written to it: a FIFO empty (FIONREAD), or
   a file. ckd's clients may close their reader as soon as Wait answers (ctr 1.6's
   task.Delete closes its FIFOs before it waits for its copy): what the FIFO still holds then
   is lost, so the exit waits for it. */
static int out_taken(const struct console *c) {
  if (c->out < 0 || !c->out_fifo) return 1;
  return fifo_unread(c->out) <= 0;
}

static void console_size(struct console *c) {
  if (c->master < 0 || c->cols == 0 || c->rows == 0) return;
  struct winsize ws = {.ws_row = c->rows, .ws_col = c->cols};
  ioctl(c->master, TIOCSWINSZ, &ws);
}

static void release_holder(struct console *c) {
  if (c->holder < 0) return;
  close(c->holder);
  c->holder = -1;
}

/* A short line to a connection; one that does not take it at once (or is gone) is dropped. */
static void client_say(struct client *cl, const char *line) {
  if (cl->fd < 0) return;
  size_t n = strlen(line);
  if (send(cl->fd, line, n, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)n) {
    close(cl->fd);
    cl->fd = -1;
  }
}

static void console_request(struct console *c, struct client *cl, char *line) {
  unsigned cols, rows;
  if (strcmp(line, "start") == 0) c->started = 1;
  else if (strcmp(line, "closeio") == 0) release_holder(c);
  else if (sscanf(line, "resize %u %u", &cols, &rows) == 2 && cols > 0 && rows > 0 && cols < 65536 && rows < 65536) {
    c->cols = (unsigned short)cols;
    c->rows = (unsigned short)rows;
    console_size(c);
  }
  client_say(cl, "ok\n");
}

static void client_read(struct console *c, struct client *cl) {
  ssize_t n = read(cl->fd, cl->buf + cl->len, sizeof cl->buf - 1 - cl->len);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) {
    close(cl->fd);
    cl->fd = -1;
    return;
  }
  cl->len += (size_t)n;
  char *nl;
  while (cl->fd >= 0 && (nl = memchr(cl->buf, '\n', cl->len)) != NULL) {
    *nl = 0;
    if (nl > cl->buf && nl[-1] == '\r') nl[-1] = 0;
    console_request(c, cl, cl->buf);
    size_t used = (size_t)(nl - cl->buf) + 1;
    memmove(cl->buf, cl->buf + used, cl->len - used);
    cl->len -= used;
  }
  if (cl->len == sizeof cl->buf - 1) cl->len = 0; /* a line too long for any request */
}

static void client_accept(struct console *c, int server) {
  int fd = accept4(server, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) return;
  for (int i = 0; i < MAX_CLIENTS; i++) {
    if (c->clients[i].fd >= 0) continue;
    c->clients[i].fd = fd;
    c->clients[i].len = 0;
    if (c->exit_line[0]) client_say(&c->clients[i], c->exit_line);
    return;
  }
  close(fd);
}

/* runc's connection to the console socket (from this user's processes only), or -1. runc
   connects before it starts the container; the master comes once the init has made its
   console, after ckd's gate: it is waited for in the loop, not here. */
static int console_accept(int lsock) {
  int conn = accept4(lsock, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (conn < 0) return -1;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != getuid()) {
    close(conn);
    return -1;
  }
  return conn;
}

/* The master sent on runc's connection: its descriptor; -2 while nothing came yet; -1 when
   the connection ended without one. */
static int console_receive(int conn) {
  char name[4096];
  struct iovec iov = {.iov_base = name, .iov_len = sizeof name};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return -2;
  if (n <= 0) return -1;
  struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
  if ((msg.msg_flags & MSG_CTRUNC) || !cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(int))) return -1;
  int fd;
  memcpy(&fd, CMSG_DATA(cm), sizeof fd);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

/* A listening unix socket at path (replacing a stale one), its user's alone. */
static int listen_at(const char *path, int backlog) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  unlink(path);
  mode_t mask = umask(0077);
  int bound = bind(fd, (struct sockaddr *)&addr, sizeof addr);
  umask(mask);
  if (bound != 0 || listen(fd, backlog) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

/* Only a directory of this user's own, closed to others: no one else may stand in for its sockets. */
static int private_dir_of(const char *path, char *dir, size_t size) {
  if (snprintf(dir, size, "%s", path) >= (int)size) return 0;
  char *slash = strrchr(dir, '/');
  if (!slash || slash == dir) return 0;
  *slash = 0;
  struct stat st;
  return lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid() && (st.st_mode & 077) == 0;
}

static void write_file(const char *dir, const char *name, const char *data, size_t len) {
  char path[4096], tmp[4200];
  if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) return;
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  int ok = 1;
  for (size_t off = 0; off < len;) {
    ssize_t w = write(fd, data + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      ok = 0;
      break;
    }
    off += (size_t)w;
  }
  if (close(fd) == 0 && ok) rename(tmp, path);
}

/* runc's last words (console.err), then the status (exit: its presence is the end, for any
   ckd), then the connections. The names are console.ts's CONSOLE_ERR and KEEPER_EXIT. */
static void console_exit(struct console *c, const char *dir, int status) {
  mark_ended();
  write_file(dir, "console.err", c->err, c->err_len);
  char line[64];
  int n = snprintf(line, sizeof line, "%d %lld.%09ld\n", status, (long long)ended_at.tv_sec, (long)ended_at.tv_nsec);
  write_file(dir, "exit", line, (size_t)n);
  snprintf(c->exit_line, sizeof c->exit_line, "exit %d\n", status);
  for (int i = 0; i < MAX_CLIENTS; i++) client_say(&c->clients[i], c->exit_line);
  release_holder(c);
}

static void err_add(struct console *c, const char *b, size_t n) {
  if (n >= ERR_TAIL) {
    memcpy(c->err, b + n - ERR_TAIL, ERR_TAIL);
    c->err_len = ERR_TAIL;
    return;
  }
  if (c->err_len + n > ERR_TAIL) {
    size_t drop = c->err_len + n - ERR_TAIL;
    memmove(c->err, c->err + drop, c->err_len - drop);
    c->err_len -= drop;
  }
  memcpy(c->err + c->err_len, b, n);
  c->err_len += n;
}

static int console_main(int argc, char **argv) {
  unsigned cols, rows;
  if (argc < 8 || sscanf(argv[5], "%u", &cols) != 1 || sscanf(argv[6], "%u", &rows) != 1 || cols >= 65536 || rows >= 65536) {
    fprintf(stderr, "usage: ck-reaper --console SOCK TTYSOCK DIR PIDFILE COLS ROWS RUNC [ARGS...]\n");
    return 2;
  }
  const char *sock = argv[1], *tty_sock = argv[2], *dir = argv[3], *pid_file = argv[4];
  close_inherited(HOLDER_FD);
  static struct console c;
  c.cols = (unsigned short)cols;
  c.rows = (unsigned short)rows;
  c.master = -1;
  c.last_in = '\n';
  for (int i = 0; i < MAX_CLIENTS; i++) c.clients[i].fd = -1;
  c.out = valid_fd(OUT_FD) ? OUT_FD : -1;
  struct stat out_st;
  c.out_fifo = c.out >= 0 && fstat(c.out, &out_st) == 0 && S_ISFIFO(out_st.st_mode);
  c.in = valid_fd(IN_FD) ? IN_FD : -1;
  c.holder = valid_fd(HOLDER_FD) ? HOLDER_FD : -1;
  for (int fd = OUT_FD; fd <= HOLDER_FD; fd++) {
    if (valid_fd(fd)) fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  if (c.out >= 0) fcntl(c.out, F_SETFL, fcntl(c.out, F_GETFL) | O_NONBLOCK);
  if (c.in >= 0) fcntl(c.in, F_SETFL, fcntl(c.in, F_GETFL) | O_NONBLOCK);
  keeper_signals();
  int status = -1;
  const char *failed = NULL;
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) failed = "PR_SET_CHILD_SUBREAPER";
  sigset_t chld, old;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, &old);
  int sfd = failed ? -1 : signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  if (!failed && sfd < 0) failed = "signalfd";
  char sock_dir[4096];
  if (!failed && !private_dir_of(sock, sock_dir, sizeof sock_dir)) {
    errno = EPERM;
    failed = sock_dir; /* not a directory of this user's own, closed to others */
  }
  int server = failed ? -1 : listen_at(sock, 8);
  if (!failed && server < 0) failed = sock;
  int lsock = failed ? -1 : listen_at(tty_sock, 4);
  if (!failed && lsock < 0) failed = tty_sock;
  int errp[2] = {-1, -1};
  if (!failed && pipe2(errp, O_CLOEXEC) != 0) failed = "pipe";
  pid_t runc = failed ? -1 : fork();
  if (!failed && runc < 0) failed = "fork";
  if (failed) {
    char msg[4200];
    int n = snprintf(msg, sizeof msg, "ck-reaper: %s: %s\n", failed, strerror(errno));
    fputs(msg, stderr);
    err_add(&c, msg, (size_t)n);
    if (lsock >= 0) unlink(tty_sock);
    if (server >= 0) unlink(sock);
    console_exit(&c, dir, 255);
    return 255;
  }
  if (runc == 0) {
    /* runc: stdin nothing, stdout and stderr the pipe its last words are kept from. */
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGPIPE, SIG_DFL);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0 || dup2(null, 0) < 0 || dup2(errp[1], 1) < 0 || dup2(errp[1], 2) < 0) _exit(127);
    execvp(argv[7], &argv[7]);
    fprintf(stderr, "ck-reaper: cannot run %s: %s\n", argv[7], strerror(errno));
    _exit(127);
  }
  close(errp[1]);
  int errfd = errp[0];
  fcntl(errfd, F_SETFL, fcntl(errfd, F_GETFL) | O_NONBLOCK);
  int runc_done = 0, exit_said = 0;
  int conn = -1; /* runc's connection, until the master comes on it */
  pid_t proc = 0;
  long long deadline = -1;
  for (;;) {
    /* Reaped: runc first, then (re-parented here) the process and anything it left. */
    int ws;
    pid_t p;
    while ((p = waitpid(runc_done ? -1 : runc, &ws, WNOHANG)) != 0) {
      if (p < 0) {
        if (errno == EINTR) continue;
        if (status < 0) status = 255; /* no child left and the process never seen */
        break;
      }
      if (!runc_done) {
        runc_done = 1;
        proc = read_pid(pid_file);
        /* runc failed (its error is its last words): there is no process to keep. A runc
           killed under a running process: the process is kept all the same. */
        if (WIFEXITED(ws) && WEXITSTATUS(ws) != 0) status = WEXITSTATUS(ws);
        else if (proc == 0) status = status_of(ws);
      } else if (status < 0 && proc != 0 && p == proc) {
        status = status_of(ws);
      }
    }
    if (status >= 0 && deadline < 0) {
      mark_ended();
      deadline = now_ms() + CONSOLE_EXIT_WAIT_MS;
      if (conn >= 0) {
        /* A master already sent is still taken (it holds the last output). */
        int m = console_receive(conn);
        if (m >= 0 && c.master < 0) c.master = m;
        else if (m >= 0) close(m);
        close(conn);
        conn = -1;
      }
      if (lsock >= 0) {
        close(lsock);
        lsock = -1;
        unlink(tty_sock);
      }
      c.ilen = 0;
      if (c.in >= 0) {
        close(c.in);
        c.in = -1;
      }
    }
    int copied = c.master < 0 && c.olen == 0;
    /* Said once stdout's reader has taken it all (not only the FIFO: see out_taken), and
       runc's words are read too (it has exited: its pipe ends). */
    int taken = copied && out_taken(&c);
    if (status >= 0 && !exit_said && ((taken && errfd < 0) || now_ms() >= deadline)) {
      console_exit(&c, dir, status);
      exit_said = 1;
    }
    if (exit_said && (copied || c.out < 0)) {
      close(server);
      unlink(sock);
      return status & 0xff;
    }
    struct pollfd fds[9 + MAX_CLIENTS];
    int n = 0, at_sig, at_srv, at_e = -1, at_l = -1, at_r = -1, at_m = -1, at_o = -1, at_i = -1, at_c[MAX_CLIENTS];
    at_sig = n;
    fds[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    at_srv = n;
    fds[n++] = (struct pollfd){.fd = server, .events = POLLIN};
    if (errfd >= 0) {
      at_e = n;
      fds[n++] = (struct pollfd){.fd = errfd, .events = POLLIN};
    }
    if (lsock >= 0 && conn < 0) {
      at_l = n;
      fds[n++] = (struct pollfd){.fd = lsock, .events = POLLIN};
    }
    if (conn >= 0) {
      at_r = n;
      fds[n++] = (struct pollfd){.fd = conn, .events = POLLIN};
    }
    /* Only when there is room for its output or input for it: a master whose console every
       holder has left reports a hang-up whatever is asked, which must not spin the loop while
       stdout holds the output back. */
    if (c.master >= 0 && (c.olen == 0 || c.ilen > 0)) {
      short ev = 0;
      if (c.olen == 0) ev |= POLLIN;
      if (c.ilen > 0) ev |= POLLOUT;
      at_m = n;
      fds[n++] = (struct pollfd){.fd = c.master, .events = ev};
    }
    if (c.olen > 0 && c.out >= 0) {
      at_o = n;
      fds[n++] = (struct pollfd){.fd = c.out, .events = POLLOUT};
    }
    if (c.in >= 0 && c.started && c.ilen == 0 && c.master >= 0) {
      at_i = n;
      fds[n++] = (struct pollfd){.fd = c.in, .events = POLLIN};
    }
    for (int i = 0; i < MAX_CLIENTS; i++) {
      at_c[i] = -1;
      if (c.clients[i].fd < 0) continue;
      at_c[i] = n;
      fds[n++] = (struct pollfd){.fd = c.clients[i].fd, .events = POLLIN};
    }
    int timeout = -1;
    if (status >= 0 && !exit_said) {
      long long left = deadline - now_ms();
      timeout = left < 0 ? 0 : (int)left;
      if (copied && !taken && timeout > UNREAD_POLL_MS) timeout = UNREAD_POLL_MS;
    }
    if (poll(fds, n, timeout) < 0) {
      if (errno == EINTR) continue;
      if (status < 0) status = 255;
      if (!exit_said) console_exit(&c, dir, status);
      unlink(sock);
      return status & 0xff;
    }
    if (fds[at_sig].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {
      }
    }
    if (fds[at_srv].revents & POLLIN) client_accept(&c, server);
    for (int i = 0; i < MAX_CLIENTS; i++) {
      if (at_c[i] >= 0 && fds[at_c[i]].revents && c.clients[i].fd >= 0) client_read(&c, &c.clients[i]);
    }
    if (at_e >= 0 && fds[at_e].revents) {
      char b[4096];
      ssize_t k = read(errfd, b, sizeof b);
      if (k > 0) err_add(&c, b, (size_t)k);
      else if (k == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(errfd);
        errfd = -1;
      }
    }
    if (at_l >= 0 && fds[at_l].revents & POLLIN) conn = console_accept(lsock);
    if (at_r >= 0 && fds[at_r].revents) {
      int m = console_receive(conn);
      if (m != -2) {
        close(conn);
        conn = -1;
      }
      if (m >= 0 && c.master < 0) {
        c.master = m;
        console_size(&c);
        close(lsock);
        lsock = -1;
        unlink(tty_sock);
      } else if (m >= 0) close(m);
    }
    if (at_m >= 0 && fds[at_m].revents) {
      short r = fds[at_m].revents;
      if (c.olen == 0 && (r & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t k = read(c.master, c.obuf, sizeof c.obuf);
        if (k > 0) {
          c.ooff = 0;
          c.olen = c.out >= 0 ? (size_t)k : 0; /* no reader left: dropped */
        } else if (k == 0 || (errno != EINTR && errno != EAGAIN)) {
          /* EIO: no one holds the console any more; what it had is read. */
          close(c.master);
          c.master = -1;
          c.ilen = 0;
        }
      }
      if (c.master >= 0 && c.ilen > 0 && (r & (POLLOUT | POLLHUP | POLLERR))) {
        ssize_t k = write(c.master, c.ibuf + c.ioff, c.ilen);
        if (k > 0) {
          c.ioff += (size_t)k;
          c.ilen -= (size_t)k;
        } else if (k < 0 && errno != EINTR && errno != EAGAIN) {
          c.ilen = 0; /* no console to type into any more */
        }
      }
    }
    if (at_o >= 0 && fds[at_o].revents && c.olen > 0) {
      ssize_t k = write(c.out, c.obuf + c.ooff, c.olen);
      if (k > 0) {
        c.ooff += (size_t)k;
        c.olen -= (size_t)k;
      } else if (k < 0 && errno != EINTR && errno != EAGAIN) {
        /* Its reader is gone (EPIPE): the rest is dropped, the container is not held up. */
        close(c.out);
        c.out = -1;
        c.olen = 0;
      }
    }
    if (at_i >= 0 && fds[at_i].revents) {
      ssize_t k = read(c.in, c.ibuf, sizeof c.ibuf);
      if (k > 0) {
        c.ioff = 0;
        c.ilen = (size_t)k;
        c.last_in = (unsigned char)c.ibuf[k - 1];
      } else if (k == 0 || (errno != EINTR && errno != EAGAIN)) {
        /* stdin's end: typed as end of file at the console (after a partial line, twice). */
        close(c.in);
        c.in = -1;
        if (!c.eof_typed) {
          c.eof_typed = 1;
          c.ioff = 0;
          c.ibuf[0] = 4;
          c.ibuf[1] = 4;
          c.ilen = c.last_in == '\n' || c.last_in == '\r' ? 1 : 2;
        }
      }
    }
  }
}
