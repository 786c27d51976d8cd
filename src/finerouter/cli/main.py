"""The `finerouter` command: one sub-command per module in this package, each thin over the library."""

from __future__ import annotations

import logging

import typer

app = typer.Typer(
    name="finerouter",
    help="Route prompts to the best LLM in a pool (fine-grained latent task discovery).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    """Options of every sub-command: the log level."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _register() -> None:
    """Register one sub-command per module; importing them is cheap (heavy imports live inside the functions)."""
    from finerouter.cli import add_model, demo, discover, evaluate, fit, route, serve, suggest_prompts

    app.command("demo")(demo.demo)
    app.command("discover")(discover.discover)
    app.command("fit")(fit.fit)
    app.command("route")(route.route)
    app.command("serve")(serve.serve)
    app.command("evaluate")(evaluate.evaluate)
    app.command("add-model")(add_model.add_model)
    app.command("suggest-prompts")(suggest_prompts.suggest_prompts)
    from finerouter.cli import collect, judge

    app.command("collect")(collect.collect)
    app.command("judge")(judge.judge)
    from finerouter.cli import finetune_encoder

    app.command("finetune-encoder")(finetune_encoder.finetune_encoder)


_register()


def main() -> None:
    """Entry point of the ``finerouter`` console script."""
    app()


if __name__ == "__main__":
    main()
