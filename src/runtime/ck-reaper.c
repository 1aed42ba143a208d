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
 * status is left once the copy is done, as the keeper exits, so whoever reads it finds the
 * output delivered. Nothing is copied before runc has left, and nothing at all when runc
 * fails (its own error, which it also prints, is the client's through ckd's answer), as the
 * shim starts its copy only after runc. A logging program's pipes go to the process as they
 * are.
 * Usage: ck-reaper [--relay] EXITFILE PIDFILE RUNC [ARGS...]
 *
 * It closes every descriptor it inherited past stdio first, and is not ended by TERM, HUP or
 * INT sent to it alone (no-op handlers, reset to the default for runc by exec).
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
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void ignore(int sig) { (void)sig; }

static void close_inherited(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return;
  int self = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name);
    if (fd > 2 && fd != self) close(fd);
  }
  closedir(d);
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
      relay_close(r); /* every writer gone: so is the client's stream */
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

int main(int argc, char **argv) {
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
  close_inherited();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = ignore;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
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
    if (status >= 0 && ((out[0].src < 0 && out[1].src < 0) || now_ms() >= deadline)) leave(exit_file, status);
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
