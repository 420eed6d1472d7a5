// Network namespaces for NAT traversal tests, all created (and removed) by the test itself:
//
//   peer A 192.168.10.2 ── router A (masquerade) 10.99.1.2 ─┐
//                                                          ├─ "internet" 10.99.1.1 / 10.99.2.1
//   peer B 192.168.20.2 ── router B (masquerade) 10.99.2.2 ─┘   (disot-node, coturn, pages)
//
// The peers reach the internet namespace only through their routers; nothing routes back into
// either private network, so the only ways between A and B are the relay, a hole punched with
// STUN, or a TURN relay.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { onCleanup, tempDir, waitFor } from './harness.js';

const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const inNs = (ns, cmd, ...args) => execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });

/**
 * Build the topology; returns the namespace names and addresses. Removed at cleanup.
 *
 * The routers behave like home routers: what comes in from the internet unasked is dropped,
 * both what would be forwarded and what is addressed to the router itself. (Accepting the
 * latter would let an early packet from the other peer claim the port mapping the peer's own
 * packets need, and the NAT would then give them another port: the hole never opens.) With
 * `symmetric`, the NAT maps each destination to a new random port, as carrier-grade and many
 * corporate NATs do: addresses learned with STUN are then useless, and only TURN connects.
 */
export function setUpNat({ symmetric = false } = {}) {
  const id = randomBytes(3).toString('hex');
  const ns = { net: `dn-${id}`, ra: `dra-${id}`, rb: `drb-${id}`, a: `dpa-${id}`, b: `dpb-${id}` };
  onCleanup(() => {
    for (const n of Object.values(ns)) {
      try { ip('netns', 'del', n); } catch { /* not created */ }
    }
  });
  for (const n of Object.values(ns)) {
    ip('netns', 'add', n);
    inNs(n, 'ip', 'link', 'set', 'lo', 'up');
  }
  const link = (nsA, ifA, addrA, nsB, ifB, addrB) => {
    ip('link', 'add', ifA, 'netns', nsA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB);
    inNs(nsA, 'ip', 'addr', 'add', addrA, 'dev', ifA);
    inNs(nsB, 'ip', 'addr', 'add', addrB, 'dev', ifB);
    inNs(nsA, 'ip', 'link', 'set', 'dev', ifA, 'up');
    inNs(nsB, 'ip', 'link', 'set', 'dev', ifB, 'up');
  };
  link(ns.net, 'wa', '10.99.1.1/24', ns.ra, 'wan0', '10.99.1.2/24');
  link(ns.net, 'wb', '10.99.2.1/24', ns.rb, 'wan0', '10.99.2.2/24');
  link(ns.ra, 'lan', '192.168.10.1/24', ns.a, 'eth0', '192.168.10.2/24');
  link(ns.rb, 'lan', '192.168.20.1/24', ns.b, 'eth0', '192.168.20.2/24');
  inNs(ns.net, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
  for (const [router, wan] of [[ns.ra, '10.99.1.1'], [ns.rb, '10.99.2.1']]) {
    inNs(router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    inNs(router, 'ip', 'route', 'add', 'default', 'via', wan);
    inNs(router, 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'wan0', '-j', 'MASQUERADE', ...(symmetric ? ['--random-fully'] : []));
    // A NAT lets in only what answers traffic from inside.
    for (const chain of ['FORWARD', 'INPUT']) {
      inNs(router, 'iptables', '-A', chain, '-i', 'wan0', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT');
      inNs(router, 'iptables', '-A', chain, '-i', 'wan0', '-j', 'DROP');
    }
  }
  inNs(ns.a, 'ip', 'route', 'add', 'default', 'via', '192.168.10.1');
  inNs(ns.b, 'ip', 'route', 'add', 'default', 'via', '192.168.20.1');
  return { ns, internetA: '10.99.1.1', internetB: '10.99.2.1' };
}

/** A wrapper script that runs `binary` inside namespace `ns` (for puppeteer's executablePath). */
export function browserInNs(ns, binary) {
  const file = path.join(tempDir('nsbrowser'), 'browser.sh');
  fs.writeFileSync(file, `#!/bin/sh\nexec ip netns exec ${ns} ${binary} "$@"\n`, { mode: 0o755 });
  return file;
}

/** Start a process inside `ns`, stopped (by PID) at cleanup. Resolves once `ready(line)` is seen. */
export async function startInNs(ns, cmd, args, { ready, log } = {}) {
  const proc = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  const take = (d) => {
    lines.push(...d.toString().split('\n'));
    if (log) fs.appendFileSync(log, d);
  };
  proc.stdout.on('data', take);
  proc.stderr.on('data', take);
  onCleanup(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  if (ready) await waitFor(() => lines.some(ready) || proc.exitCode !== null, { what: `${cmd} to start` });
  if (proc.exitCode !== null) throw new Error(`${cmd} exited: ${lines.join('\n')}`);
  return proc;
}
