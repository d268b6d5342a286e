"""The `flopwatt` command line: one group, one module per command in bench/commands/.

Commands parse, call and render; the work happens in runner, store, report and the projection.

User mistakes (FlopwattError, ProbeError, and click's own usage errors such as an unknown option or
a value out of range) become one line on stderr and exit code 2, in one place: FlopwattGroup.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from bench.commands.compare import compare
from bench.commands.monitor import monitor
from bench.commands.network import serve_network
from bench.commands.probe import probe
from bench.commands.project import project
from bench.commands.runs import runs, show
from bench.commands.serve import serve
from bench.commands.submit import submit
from bench.commands.swarm import swarm
from bench.commands.transfer import export, import_
from bench.errors import FlopwattError
from probes.measurement import ProbeError


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _is_usage_error(exc: typer.TyperException) -> bool:
    """An unknown option or command, a missing argument, a value out of range: click's exit code 2.

    A bare `flopwatt` raises one too (NoArgsIsHelpError, which prints the help); typer itself tells
    it apart by name, as here.
    """
    return exc.exit_code == 2 and type(exc).__name__ != "NoArgsIsHelpError"


def _usage_line(exc: typer.TyperException) -> str:
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx else "flopwatt"
    return f"{exc.format_message().rstrip('.')} (see '{command} --help')"


class FlopwattGroup(TyperGroup):
    """Turns the errors a user can cause into one line and exit code 2, for every command."""

    def make_context(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        # the group's own options (`flopwatt --bogus`) are parsed here; a subcommand's, in invoke
        try:
            return super().make_context(*args, **kwargs)
        except typer.TyperException as exc:
            if not _is_usage_error(exc):
                raise
            raise _fail(_usage_line(exc)) from None

    def invoke(self, ctx: typer.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except (FlopwattError, ProbeError) as exc:
            raise _fail(str(exc)) from None
        except typer.TyperException as exc:
            if not _is_usage_error(exc):
                raise
            raise _fail(_usage_line(exc)) from None


app = typer.Typer(
    cls=FlopwattGroup,
    help="Measure what this machine can contribute to training AI models, store it, compare it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Markdown, not rich markup: a docstring's line breaks inside a paragraph join into one sentence at any
    # width (rich mode keeps them in the command list), and "[default: ...]" stays text instead of a tag.
    rich_markup_mode="markdown",
)

# In the order `flopwatt --help` lists them: measure, look, share, project, serve.
app.command()(probe)
app.command()(runs)
app.command()(show)
app.command()(compare)
app.command()(export)
app.command("import")(import_)
app.command()(monitor)
app.command()(swarm)
app.command()(submit)
app.command()(project)
app.command()(serve)
app.command("serve-network")(serve_network)


def main() -> None:
    app()
