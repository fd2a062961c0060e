"""``segattn demo``: napari with every widget docked, sample data and the demo model loaded."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="open napari with the plugin's widgets, sample data and demo model")
    p.add_argument("--sample", default="dsb2018_nuclei",
                   choices=["dsb2018_nuclei", "mni152_brain", "sct_spinal_cord", "none"])
    p.add_argument("--no-model", action="store_true", help="do not load the shipped demo checkpoint")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..widgets.demo import launch_demo

    launch_demo(sample=None if args.sample == "none" else args.sample, load_model=not args.no_model, block=True)
    return 0
