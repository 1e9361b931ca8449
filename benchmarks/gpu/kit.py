"""The wheels a lent GPU machine lacks, fetched here and checked here, so its one run works.

Why: the GPU machine (``h200-packages.txt`` records what it has) has no network, Python 3.12,
torch + CUDA and most of the stack, but no trl or datasets and a peft (0.21.0) other than the one
ropo pins. Whatever it lacks travels with the working tree as wheels (64 MiB per call in all).

    python benchmarks/gpu/kit.py download     # KIT's wheels for cp312 manylinux x86-64 into .whl/
    python benchmarks/gpu/kit.py check        # every requirement met there, and the wheels import

``check`` walks the requirements of ropo (pyproject.toml) and of everything the kit brings, with
the markers of the GPU machine (``TARGET_MARKERS``). Each must be met by a kit wheel or by the
machine's recorded version; a name the machine has with no recorded version is listed as
unverified (the run records the machine's full list, to commit as ``h200-packages.txt``). Then it
installs the wheels with ``--no-index --no-deps`` into an empty folder and imports each package
from there in a fresh process. A kit package's requirements come from its wheel in ``.whl/`` or,
where the wheels are not downloaded (CI), from ``kit-lock.json``, which ``download`` writes.
"""

from __future__ import annotations

import argparse
import email.parser
import json
import os
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
WHEELS = REPO / ".whl"
RECORDED = Path(__file__).with_name("h200-packages.txt")
#: Each kit wheel's version and requirements, so the check runs where the wheels are not downloaded.
LOCK = Path(__file__).with_name("kit-lock.json")

#: What travels: what the machine lacks (trl, datasets and datasets' dill and multiprocess) or has
#: in a version ropo does not take (peft 0.21.0), at the versions tested here; pure Python all.
KIT = {
    "peft": "0.21.2",
    "trl": "1.16.0",
    "datasets": "5.2.0",
    "dill": "0.4.1",
    "multiprocess": "0.70.19",
}
#: The module each kit package is imported as.
IMPORT_NAMES = {"peft": "peft", "trl": "trl", "datasets": "datasets", "dill": "dill",
                "multiprocess": "multiprocess"}
#: The GPU machine, as requirement markers see it.
TARGET_MARKERS = {
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
    "platform_machine": "x86_64", "os_name": "posix", "extra": "",
}
#: ``pip download`` flags for the machine's Python and platform (pip matches each tag exactly).
PLATFORM_FLAGS = [
    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
    *[flag for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
      for flag in ("--platform", tag)],
]


def recorded_packages(path: Path = RECORDED) -> dict[str, Version | None]:
    """The machine's packages: ``name==version`` lines, or a bare name where no version was read."""
    packages: dict[str, Version | None] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        try:
            packages[canonicalize_name(name)] = Version(version) if version else None
        except ValueError as error:
            raise SystemExit(f"{path}:{number}: {line!r}: {error}") from None
    return packages


def wheel_file(name: str, directory: Path = WHEELS) -> Path | None:
    """The downloaded wheel of kit package ``name``, if any."""
    stem = canonicalize_name(name).replace("-", "_")
    matches = [p for p in directory.glob("*.whl") if canonicalize_name(p.name.split("-")[0]).replace("-", "_") == stem]
    return matches[0] if matches else None


def wheel_requirements(wheel: Path) -> tuple[str, list[str]]:
    """A wheel's version and its ``Requires-Dist`` lines."""
    with zipfile.ZipFile(wheel) as archive:
        metadata_path = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(metadata_path).decode())
    return metadata["Version"], metadata.get_all("Requires-Dist") or []


def requirements_of(name: str) -> list[Requirement]:
    """Kit package ``name``'s requirements, from its wheel or else from ``LOCK`` (written by ``download``)."""
    wheel = wheel_file(name)
    if wheel is not None:
        version, lines = wheel_requirements(wheel)
        source = str(wheel)
    else:
        locked = json.loads(LOCK.read_text()).get(name)
        if locked is None:
            raise SystemExit(f"{LOCK}: no entry for {name}; run: python benchmarks/gpu/kit.py download")
        version, lines, source = locked["version"], locked["requires"], str(LOCK)
    if Version(version) != Version(KIT[name]):
        raise SystemExit(f"{source}: {name} is {version}, the kit pins {KIT[name]}; run: python benchmarks/gpu/kit.py download")
    return [Requirement(line) for line in lines]


def ropo_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


@dataclass
class Completeness:
    """What ``check_requirements`` found: each list holds ``'requirement (needed by X)'`` lines."""

    from_kit: list[str] = field(default_factory=list)
    on_machine: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def check_requirements(machine: dict[str, Version | None], roots: list[tuple[str, Requirement]]) -> Completeness:
    """Walk ``roots`` (needed-by, requirement) and the kit packages they reach (see the module docstring)."""
    result, seen = Completeness(), set()
    queue = list(roots)
    while queue:
        needed_by, requirement = queue.pop(0)
        if requirement.marker is not None and not requirement.marker.evaluate(TARGET_MARKERS):
            continue
        name = canonicalize_name(requirement.name)
        line = f"{requirement} (needed by {needed_by})"
        if name in KIT:
            if not requirement.specifier.contains(KIT[name], prereleases=True):
                result.missing.append(f"{line}: the kit has {KIT[name]}")
            else:
                result.from_kit.append(line)
            if name not in seen:
                seen.add(name)
                queue += [(name, r) for r in requirements_of(name)]
        elif name not in machine:
            result.missing.append(f"{line}: not on the machine and not in the kit")
        elif machine[name] is None:
            result.unverified.append(f"{line}: on the machine, version not recorded")
        elif not requirement.specifier.contains(machine[name], prereleases=True):
            result.missing.append(f"{line}: the machine has {machine[name]}")
        else:
            result.on_machine.append(line)
    return result


def check_imports() -> list[str]:
    """Install the downloaded wheels with ``--no-index --no-deps`` into an empty folder and import
    each package from there in a fresh process; returns the failures."""
    wheels = [wheel_file(name) for name in KIT]
    absent = [name for name, wheel in zip(KIT, wheels) if wheel is None]
    if absent:
        return [f"not downloaded: {', '.join(absent)} (run: python benchmarks/gpu/kit.py download)"]
    failures = []
    with tempfile.TemporaryDirectory() as target:
        install = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
             *PLATFORM_FLAGS, "--target", target, *map(str, wheels)], capture_output=True, text=True,
        )
        if install.returncode != 0:
            return [f"pip install --no-index --no-deps failed: {install.stderr.strip()[-2000:]}"]
        environment = {**os.environ, "PYTHONPATH": target, "HF_HUB_OFFLINE": "1"}
        for name, module in IMPORT_NAMES.items():
            code = f"import {module}, sys; sys.exit(0 if {module}.__file__.startswith({target!r}) else 3)"
            run = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)
            if run.returncode != 0:
                failures.append(f"import {module} from the kit: exit {run.returncode} {run.stderr.strip()[-500:]}")
    return failures


def download() -> int:
    WHEELS.mkdir(exist_ok=True)
    for name, version in KIT.items():
        present = wheel_file(name)
        if present is not None and present.name.split("-")[1] == version:
            continue
        if present is not None:
            present.unlink()
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *PLATFORM_FLAGS,
                        "-d", str(WHEELS), f"{name}=={version}"], check=True)
    lock = {}
    for name in KIT:
        version, requires = wheel_requirements(wheel_file(name))
        lock[name] = {"version": version, "requires": requires}
    LOCK.write_text(json.dumps(lock, indent=1) + "\n")
    size = sum(p.stat().st_size for p in WHEELS.glob("*.whl"))
    print(f"{len(KIT)} wheels in {WHEELS} ({size / 2**20:.1f} MiB)")
    return 0


def check(imports: bool = True) -> int:
    roots = [("ropo", r) for r in ropo_requirements()] + [("run.sh", Requirement(f"{n}=={v}")) for n, v in KIT.items()]
    result = check_requirements(recorded_packages(), roots)
    print(f"requirements met by the kit: {len(result.from_kit)}, by the machine: {len(result.on_machine)}")
    for line in result.unverified:
        print(f"  unverified: {line}")
    for line in result.missing:
        print(f"  MISSING: {line}")
    failures = check_imports() if imports else []
    for line in failures:
        print(f"  IMPORT: {line}")
    return 1 if result.missing or failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["download", "check"])
    parser.add_argument("--no-imports", action="store_true", help="check: the requirements only")
    args = parser.parse_args(argv)
    return download() if args.command == "download" else check(imports=not args.no_imports)


if __name__ == "__main__":
    sys.exit(main())
