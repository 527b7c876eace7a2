"""``unifybench score-images``: two folders of images scored with CLIP-I, CLIP-T and DINO."""
from __future__ import annotations

import json

from .render import console


def cmd_score_images(args) -> int:
    from ..scoring.fidelity import score_folders

    from ..progress import progress_bars

    with progress_bars(console(stderr=True, quiet=args.quiet)) as progress:
        from ..devices import check_device
        from ..scoring.fidelity import list_image_files

        check_device(args.device)  # a device this machine lacks is the first thing said
        # The total from the start (a bar reading 0/? while references are encoded says nothing).
        bar = progress.add_task("scoring images", total=len(list_image_files(args.gens, "--gens")))
        out = score_folders(args.refs, args.gens, backbones=args.backbones, protocol=args.protocol,
                            prompt=args.prompt, prompts_file=args.prompts, class_noun=args.class_noun,
                            batch_size=args.batch_size or (256 if args.device.startswith("cuda") else 32),
                            device=args.device, num_workers=args.workers, seed=args.seed, clip_name=args.clip_model,
                            progress=lambda n, total: progress.update(bar, advance=n, total=total))
    if args.json:
        print(json.dumps(out))
        return 0
    screen = console()
    for metric in ("clip_i", "clip_t", "dino"):
        if metric in out:
            screen.print(f"{metric:7s} {out[metric]:.4f}")
    screen.print(f"{out['n_gens']} generated vs {out['n_refs']} reference images, protocol {out['protocol']}, "
                   f"backbones {out['backbones']['kind']}")
    if out.get("label"):
        screen.print(f"[yellow]{out['label']}[/yellow]")
    return 0
