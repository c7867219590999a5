"""The whole model's configuration: one frozen dataclass of the networks' configs and the output's steps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from .arch.clip_vit import ClipVisionConfig
from .arch.gate import GateConfig
from .arch.highlights import HighlightConfig
from .arch.pem import PEMConfig
from .arch.prior_diffusion import FFEDMConfig
from .arch.restormer import RestormerConfig
from .arch.tone import ToneConfig

# values renamed since checkpoints were first written: (section, key) -> {old: new}, so old files still load
# (the v2 weights, commit 7297121, store ffedm.objective = "x0", named "sample" since)
_RENAMED = {("ffedm", "objective"): {"x0": "sample"}}

_SECTIONS = {"clip": ClipVisionConfig, "pem": PEMConfig, "ffedm": FFEDMConfig, "restormer": RestormerConfig,
             "tone": ToneConfig, "gate": GateConfig, "highlights": HighlightConfig}


@dataclass(frozen=True, kw_only=True)
class RestoreXConfig:
    clip: ClipVisionConfig = field(default_factory=ClipVisionConfig)
    pem: PEMConfig = field(default_factory=PEMConfig)
    ffedm: FFEDMConfig = field(default_factory=FFEDMConfig)
    restormer: RestormerConfig = field(default_factory=RestormerConfig)
    tone: ToneConfig = field(default_factory=ToneConfig)  # knots = 0: none (the paper's model)
    gate: GateConfig = field(default_factory=GateConfig)  # hidden = 0: none (the paper's model)
    highlights: HighlightConfig = field(default_factory=HighlightConfig)  # level = 0: none (the paper's model)

    def __post_init__(self) -> None:
        n, d = len(self.clip.taps), self.pem.dim
        checks = [
            (self.pem.in_dim == self.clip.width, f"pem.in_dim {self.pem.in_dim} != clip.width {self.clip.width}"),
            (self.pem.num_priors == n, f"pem.num_priors {self.pem.num_priors} != number of clip.taps {n}"),
            (self.ffedm.prior_dim == d, f"ffedm.prior_dim {self.ffedm.prior_dim} != pem.dim {d}"),
            (self.ffedm.num_priors == n, f"ffedm.num_priors {self.ffedm.num_priors} != number of clip.taps {n}"),
            (self.restormer.prior_dim in (0, d),
             f"restormer.prior_dim {self.restormer.prior_dim} must be 0 or pem.dim {d}"),
            (self.restormer.num_priors == n,
             f"restormer.num_priors {self.restormer.num_priors} != number of clip.taps {n}"),
            (not self.tone.enabled or (self.tone.prior_dim, self.tone.num_priors) == (d, n),
             f"tone reads {self.tone.num_priors} priors of D={self.tone.prior_dim}; the PEM gives {n} of D={d}"),
            (not self.gate.enabled or (self.gate.prior_dim, self.gate.num_priors) == (d, n),
             f"gate reads {self.gate.num_priors} priors of D={self.gate.prior_dim}; the PEM gives {n} of D={d}"),
        ]
        errors = [msg for ok, msg in checks if not ok]
        if errors:
            raise ValueError("inconsistent RestoreXConfig: " + "; ".join(errors))

    @classmethod
    def paper(cls) -> RestoreXConfig:
        """The paper's model: frozen OpenAI ViT-B/32 taps 3/6/9/12, D = 256, Restormer [2,2,2,2]+4, dim 48."""
        return cls()

    @classmethod
    def tiny(cls) -> RestoreXConfig:
        """A few-hundred-thousand-parameter model for tests: runs in milliseconds on a CPU."""
        return cls(
            clip=ClipVisionConfig(image_size=64, patch_size=16, width=32, layers=4, heads=2, output_dim=16,
                                  taps=(1, 2, 3, 4), input_size=64, trainable=True),
            pem=PEMConfig(in_dim=32, dim=16),
            ffedm=FFEDMConfig(prior_dim=16),
            restormer=RestormerConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1,
                                      heads=(1, 1, 2, 2), prior_dim=16),
        )

    def replace(self, **sections: dict[str, Any]) -> RestoreXConfig:
        """Copy with some fields of some sections changed: ``cfg.replace(restormer={"dim": 32})``."""
        changes = {name: dataclasses.replace(getattr(self, name), **kw) for name, kw in sections.items()}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestoreXConfig:
        unknown = set(data) - set(_SECTIONS)
        if unknown:
            raise ValueError(f"unknown config sections {sorted(unknown)}; expected {sorted(_SECTIONS)}")
        sections = {}
        for name, section_cls in _SECTIONS.items():
            values = dict(data.get(name, {}))
            for (section, key), renamed in _RENAMED.items():
                if section == name and values.get(key) in renamed:
                    values[key] = renamed[values[key]]
            known = {f.name for f in fields(section_cls)}
            if set(values) - known:
                raise ValueError(f"unknown keys {sorted(set(values) - known)} in config section {name!r}; "
                                 "was this checkpoint written by a newer RestoreX?")
            sections[name] = section_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        return cls(**sections)
