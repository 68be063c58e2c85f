#!/usr/bin/env python3
"""Drive Grove from Python with pycapnp: create, run with live output, wait, destroy.

Grove's whole API is the Cap'n Proto schema in schema/api.capnp, so any Cap'n
Proto implementation can be a client. This one loads the schema at run time
(no generated code), connects to groved's unix socket and:

  1. Grove.create     makes a container (handle from --handle, or one the
                      server generates, read back with Container.handle);
  2. Container.run    starts a command in it, with its stdout and stderr sent
                      to ByteStream capabilities implemented here in Python,
                      which print every chunk the moment groved pushes it;
  3. Process.wait     gives the exit status (pipelined on run's answer);
  4. Grove.destroy    removes the container, whatever happened before.

Usage:
  python grove_example.py [--socket PATH] [--handle NAME] [-- COMMAND ARG...]

Exits 0 when all of that worked (whatever the command's own exit status,
which it prints as "exit status: N"); 1 with "error: ..." otherwise.
"""

import argparse
import asyncio
import os
import signal
import sys
import time

import capnp

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "..", "..", "schema", "api.capnp")

# What runs when no command is given: three lines of stdout 0.2 s apart (so
# you can watch them arrive one by one), a line of stderr, exit status 3.
DEFAULT_COMMAND = [
    "sh",
    "-c",
    "for i in 1 2 3; do echo line $i; sleep 0.2; done; echo err >&2; exit 3",
]


def load_schema():
    """Parse schema/api.capnp.

    api.capnp imports nothing by name, but its `-> stream` methods
    (ByteStream.write) make the compiler look for /capnp/stream.capnp in the
    import path. pycapnp ships that file inside its package, so the directory
    holding the `capnp` package is put on the path; the system's include
    directories (Debian's libcapnp-dev) are fallbacks.
    """
    imports = [os.path.dirname(os.path.dirname(os.path.abspath(capnp.__file__)))]
    imports += [d for d in ("/usr/local/include", "/usr/include") if os.path.isdir(d)]
    return capnp.load(os.path.abspath(SCHEMA), imports=imports)


api = load_schema()


class PrintingStream(api.ByteStream.Server):
    """A ByteStream (schema: `write @0 (data :Data) -> stream; done @1 ();`)
    that prints what groved pushes into it.

    Each complete line is printed as soon as the chunk holding it arrives,
    tagged with the stream's name and the time since the process started:

        [+0.205s stdout] line 2
    """

    def __init__(self, name, started):
        self.name = name
        self.started = started
        self.pending = b""  # the end of a line whose newline has not come yet
        self.chunks = 0

    def _print(self, line):
        elapsed = time.monotonic() - self.started
        text = line.decode("utf-8", errors="replace")
        print(f"[+{elapsed:.3f}s {self.name}] {text}", flush=True)

    # Server methods are coroutines named after the schema's methods; their
    # parameters arrive as keyword arguments (plus `_context`).
    async def write(self, data, **kwargs):
        self.chunks += 1
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            self._print(line)

    async def done(self, **kwargs):
        if self.pending:
            self._print(self.pending)
            self.pending = b""


class ExampleError(Exception):
    """A failure explained in its message."""


def describe(error):
    """A one-line message for an exception."""
    if isinstance(error, capnp.KjException):
        # groved's reasons start with a code, e.g. "[containerNotFound] ...".
        return error.description
    if isinstance(error, ExampleError):
        return str(error)
    return f"{type(error).__name__}: {error}"


async def session(args):
    # Connect: an asyncio unix-socket connection wrapped for Cap'n Proto's
    # two-party protocol; the bootstrap capability is the server's `Grove`.
    try:
        stream = await capnp.AsyncIoStream.create_unix_connection(args.socket)
    except OSError as e:
        raise ExampleError(f"cannot connect to groved at {args.socket}: {e}") from e
    client = capnp.TwoPartyClient(stream)
    grove = client.bootstrap().cast_as(api.Grove)

    await grove.ping()
    print(f"connected to groved at {args.socket}", flush=True)

    # Grove.create(spec :ContainerSpec) -> (container :Container).
    # Awaited before going on, so we know the container is ours to destroy
    # (a create refused with [handleTaken] must not destroy someone else's).
    created = await grove.create(spec={"handle": args.handle})
    container = created.container
    # A generated handle is read back: Container.handle() -> (handle :Text).
    handle = args.handle or (await container.handle()).handle
    print(f"created container {handle}", flush=True)

    status = None
    try:
        # Container.run(spec :ProcessSpec, io :ProcessIO) -> (process :Process).
        started = time.monotonic()
        stdout = PrintingStream("stdout", started)
        stderr = PrintingStream("stderr", started)
        run = container.run_request()
        run.spec.path = args.command[0]  # ProcessSpec.path: looked up in PATH
        run.spec.args = args.command[1:]  # ProcessSpec.args: argv[1..]
        run.io.stdout = stdout  # ProcessIO.stdout: our ByteStream capability
        run.io.stderr = stderr
        run.io.openStdin = False  # stdin at end-of-file from the start
        print(f"running {args.command!r}", flush=True)

        # Process.wait() -> (exitStatus :Int32), called on the process that
        # run *will* return (promise pipelining): run and wait leave together,
        # with no round trip in between. wait answers once the process has
        # exited and its output has been delivered to our streams.
        process = run.send().process
        status = (await process.wait()).exitStatus
        if status >= 0:
            print(f"exit status: {status}", flush=True)
        else:
            print(f"exit status: {status} (killed by signal {-status})", flush=True)
    finally:
        # Grove.destroy(handle :Text) -> (), whatever happened above.
        try:
            await grove.destroy(handle)
            print(f"destroyed container {handle}", flush=True)
        except Exception as e:
            # Do not hide the error that brought us here, if there was one.
            if status is None:
                print(f"error: destroying {handle}: {describe(e)}", file=sys.stderr, flush=True)
            else:
                raise


async def main(args):
    # pycapnp runs Cap'n Proto's own (KJ) event loop on top of asyncio's;
    # every RPC must happen inside this context.
    async with capnp.kj_loop():
        # SIGTERM cancels the session like Ctrl-C does (asyncio.run handles
        # SIGINT), so its `finally` still destroys the container.
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGTERM, asyncio.current_task().cancel
        )
        await session(args)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Create a Grove container, run a command in it with live "
        "output, wait for it and destroy the container.",
    )
    parser.add_argument(
        "--socket",
        default=os.environ.get("GROVE_SOCKET") or "/run/grove/grove.sock",
        help="groved's unix socket (default: $GROVE_SOCKET, else /run/grove/grove.sock)",
    )
    parser.add_argument(
        "--handle",
        default="",
        help="the container's handle (default: one the server generates)",
    )
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        help="the command to run, after `--` (default: a demo that prints "
        "three lines, a line on stderr and exits 3)",
    )
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        args.command = DEFAULT_COMMAND
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    try:
        asyncio.run(main(arguments))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("error: interrupted")
    except Exception as e:
        sys.exit(f"error: {describe(e)}")
