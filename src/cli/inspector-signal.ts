// Node opens its inspector on 127.0.0.1:9229 when its process receives SIGUSR1, with no
// authentication: any local user could then run code in a process that runs as root (ckd,
// its compactions, a console's keeper). containerd takes SIGUSR1 to dump its goroutines'
// stacks, so an operator used to it may well send it. A listener of our own keeps the
// inspector shut (Node starts it only while no listener is installed).

/** Installs the listener; `onSignal` is told of each SIGUSR1 (ckd logs it). */
export function keepInspectorShut(onSignal: () => void = () => undefined): void {
  process.on("SIGUSR1", onSignal);
}
