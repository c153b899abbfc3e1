"""``cli.py summary``: layers, parameters and FLOPs of a task's models, per configuration."""
from __future__ import annotations

from runtime.channels import ALL_CONFIGS

from .models import create_model
from .report import count_flops, count_parameters


def summarize(task: str, image_size: int, num_classes: int) -> str:
    if task == "task1":
        from .task1 import MODELS, run_specs
    else:
        from .task2 import MODELS, run_specs  # type: ignore[no-redef]
    from .engine import check_input_size

    check_input_size([spec for name in MODELS for spec in run_specs(name)], image_size)
    lines: list[str] = []
    for name in MODELS:
        specs = run_specs(name)
        model = create_model(specs[0].model, num_classes=num_classes, **specs[0].model_kwargs)
        lines += [f"== {name} ==", str(model), f"trainable parameters: {count_parameters(model):,}"
                  + (f" per configuration ({len(specs)} separate models)" if len(specs) > 1 else "")]
        if hasattr(model, "weight_layer_count"):
            lines.append(f"weight layers on the main path: {model.weight_layer_count()}")
        for spec in specs:
            m = create_model(spec.model, num_classes=num_classes, **spec.model_kwargs)
            for config in spec.configs if len(specs) > 1 else ALL_CONFIGS if m.multi_config else spec.configs:
                resolved = m.resolve(config)
                lines.append(f"  {config.name:>3}: {count_parameters(resolved):>11,} params in graph, "
                             f"{count_flops(resolved, config, image_size) / 1e6:8.1f} MFLOPs at {image_size}px")
        lines.append("")
    return "\n".join(lines)
