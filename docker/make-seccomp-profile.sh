#!/usr/bin/env bash
# Regenerates docker/seccomp-io_uring.json: a container runtime's default seccomp profile with
# io_uring_setup, io_uring_enter and io_uring_register added to its unconditional allow list.
# Nothing else is changed; the script prints the names it added.
#
#   usage: docker/make-seccomp-profile.sh [DEFAULT_PROFILE] [OUTPUT]
#     DEFAULT_PROFILE  default: /usr/share/containers/seccomp.json (podman / containers-common).
#                      Docker's default profile (moby's profiles/seccomp/default.json) works too.
#     OUTPUT           default: seccomp-io_uring.json next to this script.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=${1:-/usr/share/containers/seccomp.json}
out=${2:-$here/seccomp-io_uring.json}
[ -r "$src" ] || { echo "make-seccomp-profile: cannot read $src (install podman or containers-common, or pass a default profile)" >&2; exit 1; }

python3 - "$src" "$out" <<'PY'
import json, sys

src, out = sys.argv[1], sys.argv[2]
wanted = ["io_uring_setup", "io_uring_enter", "io_uring_register"]
with open(src) as f:
    profile = json.load(f)

rules = profile.get("syscalls")
if not isinstance(rules, list):
    sys.exit(f"make-seccomp-profile: {src}: no 'syscalls' list")

def unconditional_allow(rule):
    # The plain allow list: no argument filters, no arch/capability/kernel conditions.
    return (rule.get("action") == "SCMP_ACT_ALLOW" and not rule.get("args")
            and not rule.get("includes") and not rule.get("excludes"))

target = next((r for r in rules if unconditional_allow(r)), None)
if target is None:
    sys.exit(f"make-seccomp-profile: {src}: no unconditional SCMP_ACT_ALLOW rule found")

# A rule that explicitly refuses one of them (some profiles list io_uring under ERRNO) would
# win over nothing, but keep the result unambiguous: drop the names from such rules.
for rule in rules:
    if rule is not target and rule.get("action") != "SCMP_ACT_ALLOW":
        names = rule.get("names", [])
        rule["names"] = [n for n in names if n not in wanted]
profile["syscalls"] = [r for r in rules if r.get("names") or r.get("name")]

added = [n for n in wanted if n not in target["names"]]
target["names"].extend(added)

with open(out, "w") as f:
    json.dump(profile, f, indent="\t")
    f.write("\n")
print(f"{out}: from {src}, added: {' '.join(added) if added else '(none, already allowed)'}")
PY
