"""greet: a command-line application shipped as a virtual environment."""

import click


@click.command()
@click.argument("name", default="world")
def main(name: str) -> None:
    click.echo(f"hello, {name}")


if __name__ == "__main__":
    main()
