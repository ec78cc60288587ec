"""Serve a trained model directory: REST API (POST /translate, GET /health, GET /info) and a page at /."""

from nmt.cli import hydra_main
from nmt.config import ServeConfig
from nmt.serve.server import serve


@hydra_main("serve", ServeConfig)
def main(cfg: ServeConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
