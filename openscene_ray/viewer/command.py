"""``openscene-ray view``: a browser viewer of any scene of a manifest with free-text, image and
label-set queries and a search over the whole fused output."""

from __future__ import annotations

import argparse
import os
import secrets

from openscene_ray.kernel.config import add_config_arguments, config_from_args

TOKEN_ENV = "OPENSCENE_VIEWER_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "display_points=150000")
    parser.add_argument("--manifest", help="scene manifest URI")
    parser.add_argument("--fused", help="the fused output (local or s3://): fusion features, database search")
    parser.add_argument("--checkpoint", help="distilled 3D checkpoint (distill / ensemble features)")
    parser.add_argument("--template", help="text query template, e.g. 'a {} in a scene'")
    parser.add_argument("--scene", help="scene a page opens with (default: the manifest's first)")
    parser.add_argument("--source", choices=("fusion", "distill", "ensemble"), help="features a page opens with")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1; any other needs a token)")
    parser.add_argument("--port", type=int, help="port (default 8080; 0: any free port)")
    parser.add_argument("--token", help=f"access token for the page and its websocket; 'auto' makes one "
                        f"(default: ${TOKEN_ENV} if set)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from openscene_ray.viewer.config import ViewerConfig, is_loopback
    from openscene_ray.viewer.server import ViewerServer

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if token == "auto":
        token = secrets.token_urlsafe(24)
    flags = {key: getattr(args, key) for key in ("manifest", "fused", "checkpoint", "template", "scene", "source",
                                                 "host", "port")}  # fmt: skip
    flags["token"] = token
    server = ViewerServer(config_from_args(ViewerConfig, args, flags))
    url = server.start()
    print(f"openscene-ray viewer: {url}", flush=True)
    print(f"  {len(server.backend.scene_ids)} scenes, features: {', '.join(server.backend.sources)}; "
          f"text model {server.backend.text_model}", flush=True)  # fmt: skip
    if is_loopback(server.config.host):
        token_part = f"?token={token}" if token else ""
        print(f"  over SSH: ssh -N -L {server.port}:127.0.0.1:{server.port} <this host>, then open "
              f"http://127.0.0.1:{server.port}/{token_part}", flush=True)  # fmt: skip
    print("  Ctrl+C stops it", flush=True)
    server.serve_forever()
    return 0
