/*
 * ck-reaper: the keeper of an exec process, as containerd's shim keeps one. It becomes a
 * child subreaper, runs `runc ... exec --detach --pid-file PIDFILE ...` (runc exits once the
 * process runs, which then is re-parented to this keeper), waits for that process and leaves
 * its exit status in EXITFILE (written to EXITFILE.tmp, then renamed), exiting with it: a
 * killed process as 128 + its signal, as runc reports one. When runc itself fails (no pid
 * file), its own status is left instead.
 *
 * So the exec's end is seen when the process ends, whatever else still holds its output
 * (`sh -c 'daemon &'`), which runc in the foreground cannot tell (it waits for its copy of the
 * output to end). Usage: ck-reaper EXITFILE PIDFILE RUNC [ARGS...]
 *
 * It closes every descriptor it inherited past stdio first, and is not ended by TERM, HUP or
 * INT sent to it alone (no-op handlers, reset to the default for runc by exec).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
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

static void leave(const char *exit_file, int status) {
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", exit_file) >= (int)sizeof tmp) exit(status);
  FILE *f = fopen(tmp, "w");
  if (f) {
    fprintf(f, "%d\n", status);
    if (fclose(f) == 0) rename(tmp, exit_file);
  }
  exit(status);
}

static pid_t read_pid(const char *file) {
  FILE *f = fopen(file, "r");
  if (!f) return 0;
  long pid = 0;
  if (fscanf(f, "%ld", &pid) != 1) pid = 0;
  fclose(f);
  return pid > 0 ? (pid_t)pid : 0;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: ck-reaper EXITFILE PIDFILE RUNC [ARGS...]\n");
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
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    perror("ck-reaper: PR_SET_CHILD_SUBREAPER");
    leave(exit_file, 255);
  }
  pid_t runc = fork();
  if (runc < 0) leave(exit_file, 255);
  if (runc == 0) {
    execvp(argv[3], &argv[3]);
    _exit(127);
  }
  int ws;
  while (waitpid(runc, &ws, 0) < 0) {
    if (errno != EINTR) leave(exit_file, 255);
  }
  /* runc's own failure (its error paths stop the process first): its status. */
  if (WIFEXITED(ws) && WEXITSTATUS(ws) != 0) leave(exit_file, WEXITSTATUS(ws));
  /* runc done, or killed or crashed under the running process: the process is kept all the
     same (re-parented here as runc left), found by the pid runc wrote. */
  pid_t proc = read_pid(pid_file);
  /* Every child that comes (runc's, re-parented here) is reaped; the exec's status is kept.
     Without a pid, the keeper stays until no child is left, so the process stays kept. */
  for (;;) {
    int st;
    pid_t p = waitpid(-1, &st, 0);
    if (p < 0) {
      if (errno == EINTR) continue;
      /* No child left without the process seen: it was not re-parented here, or runc was
         killed before it started one. */
      leave(exit_file, WIFEXITED(ws) ? 255 : status_of(ws));
    }
    if (proc != 0 && p == proc) leave(exit_file, status_of(st));
  }
}
