"""Safe weight reading and CLIP ViT-B/32 loading (docs/method.md §2.4).

``read_state_dict`` reads a file without executing pickled Python: safetensors, ``torch.load(weights_only=True)``,
or, only after the zip layout proves it is one, a TorchScript archive (OpenAI's ``ViT-B-32.pt``).
``load_clip`` accepts an open_clip tag, an open_clip checkpoint (full CLIP or visual-only), OpenAI's
TorchScript archive, or a Hugging Face ``CLIPModel`` / ``CLIPVisionModel`` safetensors file, converts it to
open_clip's visual keys and strict-loads it into :class:`ClipVision`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path
from pickle import UnpicklingError

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from .arch.clip_vit import ClipVision, ClipVisionConfig, config_from_state_dict, detect
from .arch.restormer import detect_plain_restormer
from .errors import CheckpointError, ClipWeightsError, MissingWeightsError
from .files import atomic_path

logger = logging.getLogger(__name__)

SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "params_ema", "params-ema", "params", "model", "net")
STRIP_PREFIXES = ("module.", "_orig_mod.")
MODEL_NAMES = ("ViT-B-32", "ViT-B-32-quickgelu")
HF_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's hub names, preferred first
ACCEPTED_CLIP = (  # the one statement of which CLIP files load: errors, nodes and the trainer all quote it
    "open_clip 'ViT-B-32-quickgelu' openai weights (open_clip_model.safetensors from the Hugging Face repo "
    "timm/vit_base_patch32_clip_224.openai, or open_clip_pytorch_model.bin; full CLIP or visual-only), OpenAI's "
    "TorchScript ViT-B-32.pt, or a Hugging Face CLIPModel / CLIPVisionModel model.safetensors "
    "(openai/clip-vit-base-patch32)"
)
KNOWN_VITS = {(768, 12, 32): "ViT-B/32", (768, 12, 16): "ViT-B/16", (1024, 24, 14): "ViT-L/14",
              (1280, 32, 14): "ViT-H/14"}
_HEX64 = re.compile(r"[0-9a-f]{64}")


# ----------------------------------------------------------------------------------------------- reading files

def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read the tensors of a weight file without unpickling arbitrary Python objects.

    ``.safetensors`` returns its header metadata; ``.pt/.pth/.bin/.ckpt`` go through
    ``torch.load(weights_only=True)``, except TorchScript archives (a zip with ``constants.pkl`` and ``code/``),
    which ``torch.jit.load`` reads: it does not unpickle arbitrary Python objects, only tensors and TorchScript
    types, whose code is compiled TorchScript that cannot import Python modules (a scripted ``__setstate__``
    still runs, so use archives from a known source, e.g. OpenAI's URL). Wrappers (``state_dict``,
    ``params_ema``, ``model``...) and ``module.`` / ``_orig_mod.`` prefixes are removed.

    Raises:
        MissingWeightsError: the file does not exist.
        CheckpointError: unsupported suffix, truncated or corrupt file, or pickled Python objects.
    """
    sd, meta, _ = _read(Path(path))
    return sd, meta


def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, str], str]:
    """As ``read_state_dict``, plus the container kind: ``safetensors``, ``torch`` or ``torchscript``."""
    if not path.is_file():
        raise MissingWeightsError(f"Weight file not found: {path}. Check the path, or place the file there.")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise CheckpointError(f"{path}: unsupported file type {suffix!r}; accepted suffixes: {', '.join(SUFFIXES)}.")
    corrupt = (f"{path} is truncated or corrupt ({path.stat().st_size} bytes); re-download it or re-export it"
               " (an interrupted download or copy leaves such a file).")
    if suffix == ".safetensors":
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                return _canonicalize({k: f.get_tensor(k) for k in f.keys()}, path), meta, "safetensors"
        except SafetensorError as e:
            raise CheckpointError(f"{corrupt} [{e}]") from e
    with path.open("rb") as fh:
        magic = fh.read(4)
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and magic[:1] != b"\x80":  # torch.save writes a zip, or (legacy) a pickle: PROTO opcode first
        why = "zip without its directory" if magic[:2] == b"PK" else "not a torch file"
        raise CheckpointError(f"{corrupt} [{why}]")
    if is_zip and _is_torchscript(path):
        return _canonicalize(_read_torchscript(path, corrupt), path), {}, "torchscript"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise CheckpointError(f"{corrupt} [{type(e).__name__}]") from e
        raise CheckpointError(
            f"{path} holds pickled Python objects besides tensors, which are not loaded for safety. Re-save it "
            "as a plain state dict (torch.save(model.state_dict(), path)) or as .safetensors. "
            f"[{str(e).split('WeightsUnpickler error:')[-1].strip()[:200]}]") from e
    except Exception as e:  # garbage bytes surface as KeyError, EOFError, OSError, RuntimeError... all mean corrupt
        raise CheckpointError(f"{corrupt} [{type(e).__name__}: {str(e)[:200]}]") from e
    return _canonicalize(obj, path), {}, "torch"


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _read_torchscript(path: Path, corrupt: str) -> dict[str, Tensor]:
    try:
        with warnings.catch_warnings():
            # torch 2.15 marks torch.jit as deprecated; the archive format itself is what OpenAI published.
            warnings.simplefilter("ignore", FutureWarning)
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except RuntimeError as e:
        raise CheckpointError(f"{corrupt} [TorchScript: {str(e)[:200]}]") from e


def _canonicalize(obj: object, path: Path) -> dict[str, Tensor]:
    """Unwrap training wrappers, keep tensors, strip DataParallel / torch.compile prefixes."""
    while isinstance(obj, dict):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors (found {type(obj).__name__}); "
                              "export the model's state_dict() to .safetensors.")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    for prefix in STRIP_PREFIXES * 2:  # both orders: module._orig_mod. and _orig_mod.module.
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


# ------------------------------------------------------------------------------ Hugging Face <-> open_clip keys

_HF_TOP = {  # open_clip visual name -> HF name under vision_model.
    "conv1.weight": "embeddings.patch_embedding.weight",
    "class_embedding": "embeddings.class_embedding",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_pre.weight": "pre_layrnorm.weight",  # sic: HF's own spelling
    "ln_pre.bias": "pre_layrnorm.bias",
    "ln_post.weight": "post_layernorm.weight",
    "ln_post.bias": "post_layernorm.bias",
}
_HF_BLOCK = (  # open_clip resblock sub-prefix -> HF encoder-layer sub-prefix
    ("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("attn.out_proj.", "self_attn.out_proj."),
    ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2."),
)
_OC_BLOCK_KEY = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_HF_BLOCK_KEY = re.compile(r"encoder\.layers\.(\d+)\.(.+)")


def _rename(name: str, pairs: tuple[tuple[str, str], ...]) -> str:
    return next((new + name[len(old):] for old, new in pairs if name.startswith(old)), name)


def hf_to_open_clip(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """HF ``CLIPModel`` / ``CLIPVisionModel`` keys -> open_clip visual keys (no ``visual.`` prefix).

    q/k/v projections are concatenated into ``in_proj_*`` (open_clip uses ``nn.MultiheadAttention``);
    ``visual_projection.weight`` is a Linear weight (out, in), open_clip's ``proj`` is a matrix (in, out).
    ``position_ids`` (a buffer in older files) and ``text_model.*`` are dropped.
    """
    top = {hf: oc for oc, hf in _HF_TOP.items()}
    block = tuple((hf, oc) for oc, hf in _HF_BLOCK)
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for key, value in sd.items():
        if not key.startswith("vision_model.") or key.endswith("position_ids"):
            continue
        name = key[len("vision_model."):]
        if m := _HF_BLOCK_KEY.fullmatch(name):
            if a := re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", m[2]):
                qkv.setdefault(f"transformer.resblocks.{m[1]}.attn.in_proj_{a[2]}", {})[a[1]] = value
                continue
            name = f"transformer.resblocks.{m[1]}.{_rename(m[2], block)}"
        out[top.get(name, name)] = value  # unknown names pass through; the strict load reports them
    for name, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ClipWeightsError(f"Hugging Face CLIP file lacks the {sorted({'q', 'k', 'v'} - set(parts))} "
                                   f"projection for {name}; the file is incomplete, re-download it.")
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    if "visual_projection.weight" in sd:
        out["proj"] = sd["visual_projection.weight"].t().contiguous()
    return out


def open_clip_to_hf(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`hf_to_open_clip`: open_clip visual keys -> HF ``vision_model.*`` (+ ``visual_projection``)."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key == "proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif (m := _OC_BLOCK_KEY.fullmatch(key)) and (a := re.fullmatch(r"attn\.in_proj_(weight|bias)", m[2])):
            for part, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"vision_model.encoder.layers.{m[1]}.self_attn.{part}_proj.{a[1]}"] = chunk.contiguous()
        elif m:
            out[f"vision_model.encoder.layers.{m[1]}.{_rename(m[2], _HF_BLOCK)}"] = value
        else:
            out[f"vision_model.{_HF_TOP.get(key, key)}"] = value
    return out


# -------------------------------------------------------------------------------------------- CLIP loading

def describe_state_dict(sd: dict[str, Tensor], meta: dict[str, str] | None = None) -> str:
    """A short human description of what a state dict holds, for error messages."""
    return identify_state_dict(sd, meta)[1]


def identify_state_dict(sd: dict[str, Tensor], meta: dict[str, str] | None = None) -> tuple[str, str]:
    """(kind, description) of a state dict: the one detector behind every "this file is ..." message.

    kind is "restorex", "restormer", "clip" (a ViT image encoder, any accepted layout), "clip-resnet",
    "timm-vit", "clip-text" or "unknown".
    """
    keys = set(sd)
    restorex_keys = any(k.startswith(("pem_input.", "ffedm.", "restormer.")) for k in keys)
    if (meta or {}).get("format") == "restorex" or restorex_keys:
        return "restorex", ("a RestoreX checkpoint (load it with load_checkpoint / the RestoreX loader node, not "
                            "as CLIP)")
    if detect_plain_restormer(sd):
        return "restormer", "a plain Restormer checkpoint (no CLIP priors, no FFEDM)"
    if any(re.match(r"(visual\.)?(layer1\.0\.|attnpool\.)", k) for k in keys):
        return "clip-resnet", "a ResNet CLIP image encoder (RN50-style ModifiedResNet)"
    if any(k.startswith("blocks.0.attn.qkv.") for k in keys):
        return "timm-vit", "a timm ViT state dict (timm key names are not supported)"
    visual, _ = _to_open_clip(sd)
    if detect(visual):
        c = config_from_state_dict(visual)
        name = KNOWN_VITS.get((c.width, c.layers, c.patch_size), "an unlisted ViT")
        return "clip", (f"a CLIP ViT image encoder: {name} (width {c.width}, {c.layers} blocks, patch "
                        f"{c.patch_size}, image {c.image_size})")
    if any(k.startswith(("token_embedding.", "text_model.")) for k in keys):
        return "clip-text", "a CLIP text encoder without an image encoder"
    return "unknown", f"an unrecognised state dict ({len(keys)} tensors; first keys: {', '.join(sorted(keys)[:4])})"


def _to_open_clip(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """Any accepted key layout -> (open_clip visual keys without prefix, format name)."""
    if any(k.startswith("vision_model.") for k in sd):
        kind = "Hugging Face CLIPModel" if "visual_projection.weight" in sd else "Hugging Face CLIPVisionModel"
        return hf_to_open_clip(sd), kind
    if "visual.conv1.weight" in sd:  # open_clip / OpenAI full CLIP (text tower ignored)
        return {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}, "open_clip full CLIP"
    return dict(sd), "open_clip visual-only"


def _shape_mismatches(found: ClipVisionConfig, wanted: ClipVisionConfig, has_proj: bool) -> list[str]:
    names = ["image_size", "patch_size", "width", "layers", "mlp_ratio"] + (["output_dim"] if has_proj else [])
    return [f"{n}={getattr(found, n)} (expected {getattr(wanted, n)})"
            for n in names if getattr(found, n) != getattr(wanted, n)]


def clip_from_state_dict(sd: dict[str, Tensor], *, config: ClipVisionConfig | None = None,
                         meta: dict[str, str] | None = None, origin: str = "state dict",
                         quick_gelu: bool | None = None) -> ClipVision:
    """Build a frozen-or-trainable :class:`ClipVision` from any accepted CLIP state dict (strict load)."""
    visual, kind = _to_open_clip(sd)
    want = config or ClipVisionConfig()
    expected = (f"a CLIP {KNOWN_VITS.get((want.width, want.layers, want.patch_size), 'ViT')} image encoder "
                f"(width {want.width}, {want.layers} blocks, patch {want.patch_size})")
    if not detect(visual):
        raise ClipWeightsError(f"{origin} is {describe_state_dict(sd, meta)}, expected {expected}. "
                               f"Accepted files: {ACCEPTED_CLIP}.")
    found = config_from_state_dict(visual)
    assumed = config is None and quick_gelu is None  # neither the file nor the caller says which activation
    if config is None:
        config = found if quick_gelu is None else replace(found, quick_gelu=quick_gelu)
    else:
        if bad := _shape_mismatches(found, config, "proj" in visual):
            raise ClipWeightsError(f"{origin} is {describe_state_dict(sd, meta)} with {', '.join(bad)}; expected "
                                   f"{expected}. Accepted files: {ACCEPTED_CLIP}.")
        if quick_gelu is not None and quick_gelu != config.quick_gelu:
            logger.warning("%s was trained with %s but the config asks for %s; features will differ",
                           origin, *(("QuickGELU", "GELU") if quick_gelu else ("GELU", "QuickGELU")))
    clip = ClipVision(config)
    if "proj" not in visual:  # CLIPVisionModel has no projection head; RestoreX never uses it (taps are pre-head)
        clip.visual.proj = None
    try:
        clip.visual.load_state_dict({k: v.float() for k, v in visual.items()}, strict=True)
    except RuntimeError as e:
        raise ClipWeightsError(f"{origin} ({kind}) does not match a {config.layers}-block ViT: {str(e)[:600]}. "
                               f"Accepted files: {ACCEPTED_CLIP}.") from e
    logger.info("Loaded CLIP image encoder from %s: format %s, %s, %s%s", origin, kind,
                KNOWN_VITS.get((config.width, config.layers, config.patch_size), f"width {config.width}"),
                "QuickGELU" if config.quick_gelu else "GELU", "" if not assumed else
                " (assumed: the file does not record it; pass config=ClipVisionConfig(quick_gelu=...) to override)")
    return clip


def load_clip(source: str | os.PathLike[str], *, allow_download: bool = False,
              config: ClipVisionConfig | None = None) -> ClipVision:
    """Load the CLIP ViT image encoder from a file or an open_clip ViT-B-32 pretrained tag.

    Args:
        source: a file (open_clip full/visual-only, OpenAI TorchScript ``.pt``, HF ``CLIPModel`` /
            ``CLIPVisionModel`` safetensors) or a tag such as ``"openai"`` / ``"ViT-B-32/laion2b_s34b_b79k"``.
            Tags are looked up in the local caches only, unless ``allow_download``.
        config: the expected trunk (its taps, activation and freezing are used); ``None`` infers it from the file.
    Raises:
        MissingWeightsError: the file or the tag's cached weights are missing (message says what to fetch and where).
        ClipWeightsError: the file is not a matching CLIP ViT.
        CheckpointError: the file is truncated, corrupt or of an unsupported type.
    """
    quick_gelu = None
    path = Path(source)
    if not (isinstance(source, os.PathLike) or path.suffix.lower() in SUFFIXES or path.is_file()):
        path, quick_gelu = _resolve_tag(str(source), allow_download=allow_download)
    sd, meta, container = _read(path)
    if container == "torchscript":
        logger.info("%s is a TorchScript archive (OpenAI CLIP); weights converted to fp32", path)
    if quick_gelu is None and any(k.startswith("vision_model.") for k in sd):
        quick_gelu = _hf_quick_gelu(path)
    return clip_from_state_dict(sd, config=config, meta=meta, origin=str(path), quick_gelu=quick_gelu)


def _hf_quick_gelu(path: Path) -> bool | None:
    """HF stores the activation in config.json next to the weights; None when there is none."""
    cfg_file = path.with_name("config.json")
    if not cfg_file.is_file():
        return None
    cfg = json.loads(cfg_file.read_text())
    act = cfg.get("vision_config", cfg).get("hidden_act")
    return None if act is None else act == "quick_gelu"


# ------------------------------------------------------------------------------------ tags, caches, downloads

def _hub_cache_dir() -> Path:
    """The HF hub cache, read from the environment at call time (huggingface_hub reads it once at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface") \
        .expanduser() / "hub"


def _resolve_tag(source: str, *, allow_download: bool) -> tuple[Path, bool]:
    """Tag -> (local weight file, trained with QuickGELU). Touches the network only when ``allow_download``."""
    import open_clip  # heavy import, needed only for tags
    from huggingface_hub import try_to_load_from_cache

    model, _, tag = source.rpartition("/")
    model = model or "ViT-B-32"
    cfg = open_clip.get_pretrained_cfg(model, tag) if model in MODEL_NAMES else {}
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model("ViT-B-32"))
        if "/" in model or "\\" in source or (model not in MODEL_NAMES and model not in open_clip.list_models()):
            raise MissingWeightsError(f"CLIP weights not found: {source!r} is neither an existing file nor an "
                                      f"open_clip ViT-B-32 tag ({tags}). Accepted files: {ACCEPTED_CLIP}.")
        raise ClipWeightsError(f"{source!r} is not an open_clip ViT-B-32 pretrained tag; RestoreX needs a ViT-B/32 "
                               f"image encoder. Tags: {tags}. Or pass a file: {ACCEPTED_CLIP}.")
    quick_gelu = model.endswith("-quickgelu") or bool(cfg.get("quick_gelu", False))
    hub = cfg["hf_hub"]  # open_clip's convention: "org/repo/" = default file names, "org/repo/file" = that file
    repo_id, filename = (hub.rstrip("/"), "") if hub.endswith("/") else hub.rsplit("/", 1)
    filenames = (filename,) if filename else HF_WEIGHTS
    cache, looked = _hub_cache_dir(), []
    for name in filenames:
        hit = try_to_load_from_cache(repo_id, name, cache_dir=cache)
        looked.append(f"{cache}/models--{repo_id.replace('/', '--')}/snapshots/*/{name}")
        if isinstance(hit, str):
            return Path(hit), quick_gelu
    if cfg.get("url"):  # open_clip's own URL cache, used when the hub is not preferred
        legacy = Path("~/.cache/clip").expanduser() / cfg["url"].rsplit("/", 1)[-1]
        looked.append(str(legacy))
        if legacy.is_file():
            return legacy, quick_gelu
    hub_url = f"https://huggingface.co/{repo_id}/resolve/main/{filenames[0]}"
    where = (f"Download {filenames[0]} from {hub_url}" + (f" (or OpenAI's ViT-B-32.pt from {cfg['url']})"
             if cfg.get("url") else "") + ", put it in ComfyUI/models/clip_vision/ and select it in the CLIP loader, "
             "or pass its path (e.g. --clip PATH); or allow downloading (allow_download=True).")
    if not allow_download:
        raise MissingWeightsError(f"CLIP weights for '{model}/{tag}' are not in the local cache (looked in: "
                                  f"{'; '.join(looked)}). {where}")
    return _download(repo_id, filenames, where), quick_gelu


def _download(repo_id: str, filenames: tuple[str, ...], where: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT")  # read now, not at huggingface_hub's import
    for name in filenames:  # safetensors first, then the .bin, as open_clip does
        try:
            logger.info("Downloading %s from %s/%s", name, endpoint or "https://huggingface.co", repo_id)
            path = Path(hf_hub_download(repo_id, name, cache_dir=_hub_cache_dir(), endpoint=endpoint))
        except LocalEntryNotFoundError as e:  # hub unreachable (subclass of EntryNotFoundError: catch it first)
            raise MissingWeightsError(f"Could not reach the hub for {repo_id}/{name} ({str(e)[:200]}). {where}") from e
        except EntryNotFoundError:
            continue
        except Exception as e:  # any network/hub failure: the manual route in the message still works
            raise MissingWeightsError(f"Downloading {name} from {repo_id} failed ({type(e).__name__}: "
                                      f"{str(e)[:300]}). {where}") from e
        _verify_blob(path)
        return path
    raise MissingWeightsError(f"{repo_id} has none of {', '.join(filenames)}. {where}")


def _verify_blob(path: Path) -> None:
    """The hub cache names an LFS blob by its SHA256 (the ETag): check the bytes against it."""
    blob = Path(os.path.realpath(path)).name
    if not _HEX64.fullmatch(blob):
        return
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != blob:
        raise CheckpointError(f"{path} does not match its SHA256 {blob}: the download is corrupt. Delete "
                              f"{os.path.realpath(path)} and download it again.")


def convert_openai_to_safetensors(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """One-time conversion of a CLIP file (e.g. OpenAI's TorchScript ``ViT-B-32.pt``) into a visual-only
    fp32 ``.safetensors`` with ``visual.*`` keys (ClipVision's own state-dict layout). Written atomically."""
    sd, meta, container = _read(Path(src))
    visual, kind = _to_open_clip(sd)
    if not detect(visual):
        raise ClipWeightsError(f"{src} is {describe_state_dict(sd, meta)}; expected a CLIP ViT image encoder. "
                               f"Accepted files: {ACCEPTED_CLIP}.")
    out = {f"visual.{k}": v.detach().to(torch.float32).contiguous().clone() for k, v in visual.items()}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        save_file(out, tmp, metadata={"format": "open_clip-visual", "source": Path(src).name,
                                      "source_format": f"{container}/{kind}"})
    logger.info("Converted %s (%s) into %s (%d tensors, fp32)", src, kind, dst, len(out))
    return dst


__all__ = ["read_state_dict", "load_clip", "clip_from_state_dict", "convert_openai_to_safetensors",
           "hf_to_open_clip", "open_clip_to_hf", "describe_state_dict", "SUFFIXES"]
