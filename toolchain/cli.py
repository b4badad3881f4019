"""The `taipan` command: check, build, verify, iso, run, mptest, console, ctl, fleet, hwcheck."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from toolchain import build as builder
from toolchain import config, ctl, fleet, host_console, hwcheck, linux_images, micropython, verify

ROOT = builder.ROOT


def _build(args: argparse.Namespace) -> Path:
    config_path = Path(args.config) if getattr(args, "config", None) else None
    return builder.build(jobs=args.jobs, quiet=getattr(args, "quiet", False), config_path=config_path,
                         test_hooks=getattr(args, "test_hooks", False), dev=getattr(args, "dev", False))


def cmd_check(args: argparse.Namespace) -> int:
    return config.check(Path(args.file), args.test_hooks)


def cmd_build(args: argparse.Namespace) -> int:
    _build(args)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    print(verify.format_report(verify.verify(Path(args.image))))
    return 0


def cmd_iso(args: argparse.Namespace) -> int:
    from toolchain import iso

    elf = _build(args)
    out = iso.make_iso(elf, ROOT / "build" / "taipan.iso")
    print(f"wrote {out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from toolchain import emulator

    # Refuse before building: nothing the build makes would change the answer.
    if args.accel == "kvm":
        if args.emulator == "bochs":
            print("taipan: --accel kvm is a QEMU option; Bochs has no KVM", file=sys.stderr)
            return 2
        ok, reason = emulator.kvm_nested_available()
        if not ok:
            print(f"taipan: --accel kvm needs nested virtualization: {reason} "
                  "(docs/nested.md says how to enable it)", file=sys.stderr)
            return 1
    if args.firmware == "uefi":
        if args.emulator == "bochs":
            print("taipan: --firmware uefi runs under QEMU with OVMF; Debian's Bochs has no "
                  "UEFI firmware (use --emulator qemu)", file=sys.stderr)
            return 2
        missing = emulator.ovmf_missing()
        if missing:
            print(f"taipan: --firmware uefi: {missing}", file=sys.stderr)
            return 1
    args.quiet = True
    elf = _build(args)
    if args.smp is None:
        # As many CPUs as the system description plans for.
        args.smp = config.load(Path(args.config) if args.config else builder.DEFAULT_CONFIG,
                               args.test_hooks).platform.cpus
    if args.emulator == "bochs":
        return _run_bochs(elf, args)
    cdrom = vars_file = None
    if args.firmware is not None:
        from toolchain import iso

        cdrom = iso.make_iso(elf, ROOT / "build" / "taipan.iso")
        if args.firmware == "uefi":
            vars_file = emulator.ovmf_vars(ROOT / "build" / "ovmf")
    argv = emulator.qemu_argv(elf, memory_mb=args.memory, smp=args.smp, serial=args.serial,
                              accel=args.accel, cpu=args.cpu, cdrom=cdrom,
                              firmware=args.firmware or "bios", vars_file=vars_file)
    print("taipan: " + " ".join(argv), file=sys.stderr)
    if args.serial == "stdio":
        print(emulator.STDIO_HINT, file=sys.stderr)
    elif args.serial.startswith("unix:"):
        print(f"taipan: reach the console with 'taipan console {args.serial}' or "
              f"'taipan ctl {args.serial} ps' (one client at a time)", file=sys.stderr)
    sys.stderr.flush()
    os.execvp(argv[0], argv)


def _run_bochs(elf: Path, args: argparse.Namespace) -> int:
    """Bochs boots the ISO with a VT-x + EPT CPU; its COM1 is joined to this terminal."""
    from toolchain import emulator, iso, terminal
    from toolchain.serial_line import Line

    image = iso.make_iso(elf, ROOT / "build" / "taipan.iso")
    if args.memory > emulator.BOCHS_HOST_MAX_MB:
        print(f"taipan: Bochs backs only {emulator.BOCHS_HOST_MAX_MB} MiB of the {args.memory} MiB "
              "with host memory: a guest touching more makes it panic, and it takes minutes to "
              "start with 16 GiB (docs/boot.md, big machines)", file=sys.stderr)
    workdir = ROOT / "build" / "bochs"
    workdir.mkdir(parents=True, exist_ok=True)
    print("taipan: Bochs boots build/taipan.iso (BIOS and GRUB first, a few seconds); "
          "Ctrl-] quits", file=sys.stderr)
    with emulator.BochsRun(image, workdir, memory_mb=args.memory, cpus=args.smp) as run:
        terminal.attach(Line("bochs", run.fileno(), None), alive=run.running)
    return 0


def cmd_mptest(args: argparse.Namespace) -> int:
    from toolchain import mptest

    elf = _build(args)
    try:
        return mptest.run(elf, dirs=args.dirs, jobs=args.jobs, subset=args.subset)
    except ValueError as e:  # a bad folder or subset name
        print(f"taipan mptest: {e}", file=sys.stderr)
        return 2


def _test_hooks_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-hooks", action="store_true",
                   help="accept the description's [test] table (hooks for Taipan's own tests)")


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="the system description to build (default: configs/demo.toml)")
    _test_hooks_option(p)


def _dev_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dev", action="store_true",
                   help="a development image: 'taipan ctl TARGET push FILE' may replace a partition's "
                   "policy module while it runs (never the default)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="taipan", description="Build, verify and run the Taipan hypervisor.")
    top.add_argument("-j", "--jobs", type=int, default=None, help="parallel compile jobs (default: all cores)")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate a system description without building")
    p.add_argument("file", help="a TOML system description, e.g. configs/demo.toml")
    _test_hooks_option(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("build", help="build build/taipan.elf and verify it")
    _config_option(p)
    _dev_option(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("verify", help="check an image with the ELF verifier")
    p.add_argument("image", nargs="?", default=str(ROOT / "build" / "taipan.elf"))
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("iso", help="build build/taipan.iso, a GRUB image that boots Taipan by multiboot2")
    _config_option(p)
    _dev_option(p)
    p.set_defaults(func=cmd_iso)

    p = sub.add_parser("run", help="build if needed and boot Taipan in an emulator, console attached")
    p.add_argument("--emulator", choices=["qemu", "bochs"], default="qemu",
                   help="qemu: AMD-V+NPT under TCG (default); bochs: VT-x+EPT from the ISO")
    p.add_argument("--accel", choices=["tcg", "kvm"], default="tcg",
                   help="kvm passes the host CPU through (needs nested virtualization)")
    p.add_argument("--firmware", choices=["bios", "uefi"], default=None,
                   help="boot build/taipan.iso through firmware: bios (SeaBIOS) or uefi (OVMF, "
                   "variables in build/ovmf/); default: QEMU loads the image by multiboot1")
    p.add_argument("--cpu", default="EPYC", help="QEMU CPU model under TCG (default EPYC)")
    p.add_argument("--smp", type=int, default=None,
                   help="number of CPUs (default: the configuration's [platform] cpus)")
    p.add_argument("--memory", type=int, default=256, help="RAM in MiB")
    p.add_argument("--serial", default="stdio", help="stdio (default), pty or unix:PATH "
                   "(a socket for taipan console and taipan ctl, one client at a time)")
    _config_option(p)
    _dev_option(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("mptest", help="run MicroPython's own test suite against the interpreter on the metal")
    p.add_argument("dirs", nargs="*", help="test folders (default: basics micropython misc extmod float)")
    p.add_argument("--subset", default=None, help="a named selection instead of dirs: ci (make test's), quick")
    p.set_defaults(func=cmd_mptest)

    host_console.add_parser(sub)
    ctl.add_parser(sub)
    fleet.add_parser(sub)
    hwcheck.add_parser(sub)
    linux_images.add_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except config.ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except (builder.BuildError, verify.VerifyError, micropython.SourceError) as e:
        print(f"taipan: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
