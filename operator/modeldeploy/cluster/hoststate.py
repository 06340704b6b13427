"""What a local node changes on the host, recorded before `up` and put back by `down`.

The kubelet sets kernel sysctls (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops),
the bridge CNI plugin turns on IP forwarding, the kubelet and kube-proxy add iptables chains,
and both leave mounts, links and directories behind. `HostState.take()` records the host;
`restore()` undoes the difference: sysctls back to their values, the iptables rules and chains
that appeared (only KUBE-* / CNI-* ones, so rules of anything else on the host stay), mounts that
appeared under the node's paths, and directories that did not exist.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Every sysctl the kubelet (protectKernelDefaults: false), kube-proxy and the bridge plugin may
# write; read from /proc/sys, so keys the kernel lacks are simply absent.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.ipv6.conf.all.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)
# Host paths the kubelet, containerd's shims and CNI use whatever their configuration says.
HOST_DIRS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/netns",
    "/run/containerd",
)
OWNED_CHAIN_PREFIXES = ("KUBE-", "CNI-")
# (save, restore, nftables family of the iptables-nft tables)
IPTABLES = (
    ("iptables-save", "iptables-restore", "ip"),
    ("ip6tables-save", "ip6tables-restore", "ip6"),
)
BUILTIN_CHAINS = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys", *key.split("."))


def read_sysctls() -> dict[str, str]:
    values = {}
    for key in SYSCTLS:
        try:
            values[key] = _sysctl_path(key).read_text().strip()
        except OSError:
            continue
    return values


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def iptables_save(save: str) -> str:
    proc = subprocess.run([save], capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else ""


def rules_by_table(dump: str) -> dict[str, tuple[set[str], list[str]]]:
    """{table: (chains, rules)} of an iptables-save dump; rules keep their `-A CHAIN …` text."""
    tables: dict[str, tuple[set[str], list[str]]] = {}
    table = ""
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
            tables[table] = (set(), [])
        elif line.startswith(":") and table:
            tables[table][0].add(line[1:].split()[0])
        elif line.startswith("-A ") and table:
            tables[table][1].append(line)
    return tables


def undo_script(before: str, now: str) -> str:
    """An `iptables-restore --noflush` script removing the KUBE-*/CNI-* rules and chains that
    `now` has and `before` had not (rules of other owners and older ones stay)."""
    old, new = rules_by_table(before), rules_by_table(now)
    out: list[str] = []
    for table, (chains, rules) in new.items():
        old_chains, old_rules = old.get(table, (set(), []))
        added_chains = sorted(c for c in chains - old_chains if c.startswith(OWNED_CHAIN_PREFIXES))
        added_rules = Counter(rules) - Counter(old_rules)
        deletes = [
            "-D" + rule[2:]
            for rule, count in added_rules.items()
            if rule.split()[1] not in added_chains and _owned(rule)
            for _ in range(count)
        ]
        if not (deletes or added_chains):
            continue
        out.append(f"*{table}")
        out += deletes
        out += [f"-F {c}" for c in added_chains]
        out += [f"-X {c}" for c in added_chains]
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def empty_new_tables(before: str, now: str) -> list[str]:
    """Tables `now` has and `before` had not, holding no rule and no chain of their own."""
    old, new = rules_by_table(before), rules_by_table(now)
    return [
        table
        for table, (chains, rules) in new.items()
        if table not in old and not rules and chains <= BUILTIN_CHAINS
    ]


def _owned(rule: str) -> bool:
    words = rule.split()
    return any(w.startswith(OWNED_CHAIN_PREFIXES) for w in words[2:]) or "cni" in rule.lower()


@dataclass
class HostState:
    sysctls: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    iptables: dict[str, str] = field(default_factory=dict)

    @classmethod
    def take(cls) -> HostState:
        return cls(
            sysctls=read_sysctls(),
            mounts=mount_points(),
            links=sorted(os.listdir("/sys/class/net")),
            dirs=[d for d in HOST_DIRS if os.path.lexists(d)],
            iptables={save: iptables_save(save) for save, _, _ in IPTABLES},
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> HostState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def restore(self, under: list[Path], links: list[str]) -> list[str]:
        """Undo what changed since `take()`; `under`: paths whose new mounts are unmounted,
        `links`: the node's own links, deleted when they did not exist. Returns what it could
        not put back (empty when the host is as it was)."""
        problems: list[str] = []
        self._unmount(under, problems)
        for link in links:
            if link not in self.links and os.path.exists(f"/sys/class/net/{link}"):
                _run(["ip", "link", "delete", link], problems)
        for save, restore, family in IPTABLES:
            before = self.iptables.get(save, "")
            script = undo_script(before, iptables_save(save))
            if script:
                _run([restore, "--noflush"], problems, stdin=script)
            tables = empty_new_tables(before, iptables_save(save)) if _nft_backend() else []
            for table in tables:
                # iptables-nft creates a table on first use and never deletes it.
                _run(["nft", "delete", "table", family, table], problems)
        for key, value in self.sysctls.items():
            try:
                if _sysctl_path(key).read_text().strip() != value:
                    _sysctl_path(key).write_text(value + "\n")
            except OSError as e:
                problems.append(f"sysctl {key}={value}: {e}")
        for d in HOST_DIRS:
            if d not in self.dirs and os.path.lexists(d):
                shutil.rmtree(d, ignore_errors=True)
                if os.path.lexists(d):
                    problems.append(f"could not remove {d}")
        return problems

    def _unmount(self, under: list[Path], problems: list[str]) -> None:
        roots = [str(p) for p in under]
        known = Counter(self.mounts)
        added = Counter(mount_points()) - known
        # Deepest first; a lazy unmount detaches even a busy mount of a process that is gone.
        for point in sorted(added.elements(), key=len, reverse=True):
            if any(point == r or point.startswith(r + "/") for r in roots):
                _run(["umount", "--lazy", point], problems)


def _nft_backend() -> bool:
    proc = subprocess.run(["iptables", "--version"], capture_output=True, text=True, check=False)
    return "nf_tables" in proc.stdout and shutil.which("nft") is not None


def _run(argv: list[str], problems: list[str], stdin: str | None = None) -> None:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        problems.append(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
