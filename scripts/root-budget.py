#!/usr/bin/env python3
"""How much of Grove runs with privilege, against issue 20's budget.

    scripts/root-budget.py [--check] [--files]

Counts Grove's own code that runs with host root or any capability in the
initial user namespace, and the third-party crates linked into those
processes (cargo tree, normal edges, proc-macros excluded: they run at build
time only). A line counts when it is neither blank nor only a comment, and
#[cfg(test)] items are removed first. --files lists every file's count;
--check exits 1 when a total is past its budget (./dev root-budget; a
report until the split of issue 20 brings the totals under it).
"""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINE_BUDGET = 2500
CRATE_BUDGET = 10

# What runs privileged today: grove-helper (main process, spawner, setup
# child, image unpacker: one binary) and the modules of Grove's own crates
# it links.
PRIVILEGED = {
    "grove-helper": sorted((ROOT / "helper/src").rglob("*.rs")),
    "grove-daemon (the helper's modules)": [
        ROOT / "daemon/src" / name for name in ("lib.rs", "logline.rs", "systemd.rs")
    ],
    "grove-schema (the helper's modules)": [
        ROOT / "schema/src" / name
        for name in ("lib.rs", "helper.rs", "envelope.rs", "net.rs", "handle.rs",
                     "bpf.rs", "conf.rs", "fault.rs", "image_ref.rs")
    ],
}
# wshd holds capabilities in the initial user namespace only as PID 1 of a
# privileged container (policy allow_privileged): reported, not budgeted.
CONDITIONAL = {"grove-wshd (privileged containers only)": sorted((ROOT / "wshd/src").rglob("*.rs"))}
CRATES = ["grove-helper"]


def strip_tests(text: str) -> str:
    """Drop each #[cfg(test)] item: the attribute, then the item up to its
    closing brace (or semicolon), braces matched outside strings and
    comments well enough for this code base."""
    out, i = [], 0
    pattern = re.compile(r"#\[cfg\(test\)\]")
    while True:
        m = pattern.search(text, i)
        if not m:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:m.start()])
        j, depth, seen_brace = m.end(), 0, False
        while j < len(text):
            c = text[j]
            if c == '"':
                j += 1
                while j < len(text) and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
            elif text.startswith("//", j):
                j = text.find("\n", j)
                if j < 0:
                    j = len(text)
                continue
            elif c == "{":
                depth += 1
                seen_brace = True
            elif c == "}":
                depth -= 1
                if seen_brace and depth == 0:
                    j += 1
                    break
            elif c == ";" and not seen_brace:
                j += 1
                break
            j += 1
        i = j


def code_lines(path: Path) -> int:
    text = strip_tests(path.read_text())
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return sum(1 for line in text.splitlines()
               if line.strip() and not line.strip().startswith("//"))


def third_party(crate: str) -> list[str]:
    out = subprocess.run(
        ["cargo", "tree", "-p", crate, "-e", "normal,no-proc-macro", "--prefix", "none",
         "--format", "{p}", "--target", "x86_64-unknown-linux-gnu"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    return sorted(n for n in names if not n.startswith("grove-"))


def main() -> int:
    check = "--check" in sys.argv[1:]
    files = "--files" in sys.argv[1:]
    total = 0
    print(f"Privileged code (non-blank, non-comment lines, #[cfg(test)] items removed):")
    for group, paths in {**PRIVILEGED, **CONDITIONAL}.items():
        counts = [(p, code_lines(p)) for p in paths]
        n = sum(c for _, c in counts)
        if group in PRIVILEGED:
            total += n
        print(f"  {group:<45} {n:>6} lines in {len(paths)} files")
        if files:
            for p, c in sorted(counts, key=lambda x: -x[1]):
                print(f"      {c:>6}  {p.relative_to(ROOT)}")
    crates = sorted({c for crate in CRATES for c in third_party(crate)})
    print(f"  {'total (budget ' + str(LINE_BUDGET) + ')':<45} {total:>6} lines")
    print(f"Third-party crates linked into them: {len(crates)} (budget {CRATE_BUDGET})")
    print("  " + ", ".join(crates))
    over = total > LINE_BUDGET or len(crates) > CRATE_BUDGET
    if over:
        print(f"{'FAILED' if check else 'over budget'}: "
              f"{total} lines (budget {LINE_BUDGET}), {len(crates)} crates (budget {CRATE_BUDGET})")
    return 1 if (over and check) else 0


if __name__ == "__main__":
    sys.exit(main())
