"""Multi-site prostate MRI segmentation on disk: ``prostate_saml`` (NIfTI) and ``prostate_prr`` (PNG).

``prostate_saml`` (DATASETS.md section D; the SAML / MS-Net set used by FedDG, HarmoFL, IOP-FL)::

    <root>/{BIDMC,HK,I2CVB,ISBI,ISBI_1.5,UCL}/CaseXX.nii.gz
    <root>/<site>/CaseXX_segmentation.nii.gz      (ISBI_1.5: CaseXX_Segmentation.nii.gz)

Volumes are read with nibabel and sliced along their last axis.  Per case: intensities clipped
to ``[min, 99th percentile]`` and scaled to ``[0, 1]``; label 2 merged into 1 (every non-zero
label is prostate); each sample is slice ``i`` with slices ``i-1, i, i+1`` as its three channels
(the end slices repeat themselves); by default only slices with prostate are kept
(``keep_empty_slices: true`` keeps all); slices resized to ``image_size`` (bilinear, antialiased;
masks nearest).  Cases, never slices, are split into train/valid/test, seeded; the split is saved
next to the cache as a split file (:mod:`fedml_prr.data.split_file`, rows ``case_id,client,split``)
and reused (a saved split naming a missing case, or missing a case on disk, is an error; a legacy
JSON split given as ``split_file`` is read too).

``prostate_prr`` (DATASETS.md section E; the PRR reference layout of 2-D slices)::

    <root>/<site>/train.lst, valid.lst, test.lst     one file name per line
    <root>/<site>/images/<name>                      any image, read as RGB, resized bicubic
    <root>/<site>/labels/<name>                      mask 0/255 (or 0/1), resized nearest

Sites are the sub-folders holding a ``train.lst`` (A-E in the reference); the splits are the
shipped lists.  A mask pixel is prostate when it is >= 128 (0/255 masks) or > 0 (masks whose
maximum is 1).

Both loaders cache the preprocessed tensors (:mod:`fedml_prr.data.segmentation_cache`, default folder
``<root>/.fedml_prr_cache``; option ``cache_dir``, or ``cache: false``) and raise errors that name
the file and what to do: a missing site folder or list, a volume or image without its segmentation
file, an image and a mask of different shapes, an empty site.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .segmentation_cache import default_cache_dir, file_fingerprint, load_or_build
from .datasets import register_dataset
from .federation import SPLITS, ClientData, Federation, FederationInfo, ImageSplit
from .images import decode_image, read_image_size
from .selection import fixed_class_names, name_list, select_clients
from .split_file import assign_splits, read_split_file, rows_of_assignment, write_split_file

logger = logging.getLogger(__name__)

CLASS_NAMES = ("background", "prostate")
SAML_SITES = ("BIDMC", "HK", "I2CVB", "ISBI", "ISBI_1.5", "UCL")
LOADER_VERSION = 1
#: The item column of a prostate_saml split file (rows case_id,client,split; client = site).
SPLIT_ITEM_COLUMN = "case_id"
_CASE = re.compile(r"^(case\d+)\.nii(\.gz)?$", re.IGNORECASE)

PathLike = Union[str, Path]


# ----------------------------------------------------------------------------- shared helpers

def _resize_pair(images: torch.Tensor, masks: torch.Tensor, image_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """float images ``[N, 3, H, W]`` in [0, 1] and masks ``[N, H, W]`` -> uint8, ``image_size`` square."""
    if tuple(images.shape[2:]) != (image_size, image_size):
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False,
                               antialias=True)
        masks = F.interpolate(masks[:, None].float(), size=(image_size, image_size), mode="nearest")[:, 0]
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), masks.round().to(torch.uint8)


def _empty_split(image_size: int) -> ImageSplit:
    return ImageSplit(torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8),
                      torch.zeros(0, image_size, image_size, dtype=torch.uint8))


def _cat_splits(parts: List[Tuple[torch.Tensor, torch.Tensor]], image_size: int) -> ImageSplit:
    if not parts:
        return _empty_split(image_size)
    return ImageSplit(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))


def _cache_dir(root: Path, cache: bool, cache_dir: Optional[PathLike]) -> Optional[Path]:
    if not cache:
        return None
    return Path(cache_dir) if cache_dir is not None else default_cache_dir(root)


# ----------------------------------------------------------------------------- SAML (NIfTI)

def find_cases(site_dir: Path) -> List[Tuple[str, Path, Path]]:
    """``(case id, volume, segmentation)`` of every ``CaseXX.nii[.gz]`` in ``site_dir``, sorted.

    Raises ``ValueError`` for a site without volumes and ``FileNotFoundError`` for a volume
    without its ``CaseXX_segmentation`` (or ``_Segmentation``) file.
    """
    files = {p.name.lower(): p for p in site_dir.iterdir() if p.is_file()}
    cases = []
    for lower, path in sorted(files.items()):
        match = _CASE.match(path.name)
        if not match:
            continue
        case = path.name[:len(match.group(1))]
        extension = path.name[len(case):]
        mask = files.get(f"{case.lower()}_segmentation{extension.lower()}")
        if mask is None:
            raise FileNotFoundError(f"missing segmentation file for {path}: expected {case}_segmentation{extension} "
                                    f"(or {case}_Segmentation{extension}) in {site_dir}; add it or remove the volume")
        cases.append((case, path, mask))
    if not cases:
        raise ValueError(f"empty site: {site_dir} holds no CaseXX.nii.gz volumes; add the site's cases or leave the "
                         "site out with the dataset option sites: [...]")
    return cases


def split_cases(case_ids: Sequence[str], seed: int, site_index: int,
                fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> Dict[str, List[str]]:
    """Seeded split of one site's cases into train/valid/test (every case in exactly one split).

    Valid and test get ``round(fraction * n)`` cases, at least one each when the site has 3 or
    more cases; train gets the rest.  Sites with fewer than 3 cases put every case in train.
    """
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"split fractions must be three non-negative numbers, got {list(fractions)}")
    ids = sorted(case_ids)
    order = np.random.default_rng(np.random.SeedSequence([seed, site_index])).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    n = len(ids)
    total = sum(fractions)
    if n < 3:
        return {"train": sorted(shuffled), "valid": [], "test": []}
    n_valid = max(1, round(fractions[1] / total * n))
    n_test = max(1, round(fractions[2] / total * n))
    while n_valid + n_test > n - 1:  # train keeps at least one case
        if n_valid >= n_test:
            n_valid -= 1
        else:
            n_test -= 1
    return {"test": sorted(shuffled[:n_test]), "valid": sorted(shuffled[n_test:n_test + n_valid]),
            "train": sorted(shuffled[n_test + n_valid:])}


def _read_split_file(path: Path, cases: Dict[str, List[str]]) -> Dict[str, Dict[str, List[str]]]:
    """``{site: {split: [case ids]}}`` of the sites in ``cases`` from a split file (rows of other
    sites are ignored: a split of all six sites serves a run on a subset)."""
    rows = [r for r in read_split_file(path, item_column=SPLIT_ITEM_COLUMN) if r.client in cases]
    assign_splits(rows, [(site, case) for site, ids in cases.items() for case in ids], path, noun="case")
    assignment: Dict[str, Dict[str, List[str]]] = {site: {split: [] for split in SPLITS} for site in cases}
    for row in rows:  # file order within each split
        assignment[row.client][row.split].append(row.item)
    return assignment


def _load_volume(case: str, image_path: Path, mask_path: Path, image_size: int,
                 keep_empty_slices: bool, clip_percentile: float) -> Tuple[torch.Tensor, torch.Tensor]:
    import nibabel as nib

    try:
        volume = np.asarray(nib.load(str(image_path)).get_fdata(dtype=np.float32))
        labels = np.asarray(nib.load(str(mask_path)).dataobj)
    except Exception as exc:
        raise ValueError(f"cannot read {image_path} or {mask_path} as NIfTI ({exc}); replace the file") from exc
    volume, labels = np.squeeze(volume), np.squeeze(labels)
    if volume.ndim != 3 or volume.shape != labels.shape:
        raise ValueError(f"shape mismatch: {image_path} is {volume.shape} but its segmentation {mask_path} is "
                         f"{labels.shape}; they must be the same 3-D grid")
    low, high = float(volume.min()), float(np.percentile(volume, clip_percentile))
    scaled = (np.clip(volume, low, high) - low) / (high - low) if high > low else np.zeros_like(volume)
    vol = torch.from_numpy(np.ascontiguousarray(np.moveaxis(scaled, -1, 0))).float()  # [D, H, W]
    mask = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.rint(labels) > 0, -1, 0)))  # label 2 merged into 1
    depth = vol.shape[0]
    index = torch.arange(depth)
    images = torch.stack([vol[(index - 1).clamp_min(0)], vol, vol[(index + 1).clamp_max(depth - 1)]], dim=1)
    keep = torch.ones(depth, dtype=torch.bool) if keep_empty_slices else mask.flatten(1).any(1)
    if not keep.any():
        logger.warning("%s: no slice has prostate; the case contributes nothing", image_path)
    return _resize_pair(images[keep], mask[keep].to(torch.uint8), image_size)


def load_prostate_saml(root: PathLike, *, image_size: int = 256, seed: int = 0, sites: Sequence[str] = SAML_SITES,
                       keep_empty_slices: bool = False, clip_percentile: float = 99.0,
                       split_fractions: Sequence[float] = (0.6, 0.2, 0.2), split_file: Optional[PathLike] = None,
                       cache: bool = True, cache_dir: Optional[PathLike] = None,
                       clients: Optional[Sequence[str]] = None) -> Federation:
    """Read the 6-site NIfTI layout into a segmentation :class:`Federation` (module docstring).

    ``sites`` are the federation's sites; ``clients`` (default: all of them) the ones read - only
    their folders need to exist, and site ``sites[i]``'s cases are split with ``(seed, i)``
    whichever sites are read.  ``split_file`` (default
    ``<cache folder>/prostate_saml_split_seed<seed>.csv``, or ``<root>/prostate_saml_split_seed<seed>.csv``
    when caching is off) is read if it exists, else drawn with :func:`split_cases` and written.
    """
    sites = tuple(sites)
    selected = select_clients("prostate_saml", sites, clients)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist; expected <root>/{{{','.join(SAML_SITES)}}}/")
    site_dirs = {site: root / site for site in selected}
    missing = [str(d) for d in site_dirs.values() if not d.is_dir()]
    if missing:
        raise FileNotFoundError(f"missing site folder(s) {missing}; add them, or choose the sites with the dataset "
                                f"option sites: [...] (the federation's) or clients: [...] (the ones read here) "
                                f"(found: {sorted(p.name for p in root.iterdir() if p.is_dir())})")
    found = {site: find_cases(d) for site, d in site_dirs.items()}
    cases = {site: [c for c, _, _ in items] for site, items in found.items()}
    folder = _cache_dir(root, cache, cache_dir)
    default_split = (folder or root) / f"prostate_saml_split_seed{seed}.csv"
    split_path = Path(split_file) if split_file is not None else default_split
    if split_path.is_file():
        assignment = _read_split_file(split_path, cases)
    else:
        if split_path.suffix.lower() == ".json":
            raise FileNotFoundError(f"missing split file {split_path}; split files are CSV now: give a .csv path "
                                    "(the drawn split is saved there) or an existing split file")
        assignment = {site: split_cases(ids, seed, sites.index(site), split_fractions) for site, ids in cases.items()}
        try:
            write_split_file(split_path, rows_of_assignment(assignment), item_column=SPLIT_ITEM_COLUMN)
            logger.info("saved the case split to %s", split_path)
        except OSError as exc:
            logger.warning("could not save the case split to %s (%s); it is redrawn identically from the seed",
                           split_path, exc)

    def build() -> Federation:
        clients = []
        for site, items in found.items():
            by_case = {c: (image, mask) for c, image, mask in items}
            parts = {split: _cat_splits([_load_volume(c, *by_case[c], image_size, keep_empty_slices, clip_percentile)
                                         for c in assignment[site][split]], image_size) for split in SPLITS}
            if len(parts["train"]) == 0:
                raise ValueError(f"empty site: {site_dirs[site]} has no training slice with prostate; add cases, "
                                 "set keep_empty_slices: true, or leave the site out")
            clients.append(ClientData(site, **parts))
        return Federation("prostate_saml", CLASS_NAMES, tuple(clients))

    files = [p for items in found.values() for _, image, mask in items for p in (image, mask)]
    key = {"loader": "prostate_saml", "version": LOADER_VERSION, "image_size": image_size,
           "keep_empty_slices": keep_empty_slices, "clip_percentile": clip_percentile, "split": assignment,
           "files": file_fingerprint(files, root)}
    federation = load_or_build(folder, "prostate_saml", key, build)
    logger.info("prostate_saml: %s", ", ".join(f"{c.name} {len(c.train)}/{len(c.valid)}/{len(c.test)}"
                                                 for c in federation.clients))
    return federation


# ----------------------------------------------------------------------------- PRR reference (PNG + .lst)

def _read_list(path: Path) -> List[str]:
    if not path.is_file():
        raise FileNotFoundError(f"missing split list {path}; every site needs train.lst, valid.lst and test.lst "
                                "(one image file name per line; a list may be empty)")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _load_slice(image_path: Path, label_path: Path, image_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    if not image_path.is_file():
        raise FileNotFoundError(f"missing image {image_path} (listed in the site's .lst files)")
    if not label_path.is_file():
        raise FileNotFoundError(f"missing segmentation file {label_path} for image {image_path}; add the mask "
                                "(same file name under labels/) or remove the name from the lists")
    (width, height), (mask_width, mask_height) = read_image_size(image_path), read_image_size(label_path, mask=True)
    if (width, height) != (mask_width, mask_height):
        raise ValueError(f"shape mismatch: {image_path} is {width}x{height} but its mask {label_path} is "
                         f"{mask_width}x{mask_height}; they must have the same size")
    pixels = torch.from_numpy(decode_image(image_path, image_size, resample="bicubic"))
    values = torch.from_numpy(decode_image(label_path, image_size, mask=True, resample="nearest"))
    mask = values >= 128 if int(values.max()) > 1 else values > 0
    return pixels, mask.to(torch.uint8)


def load_prostate_prr(root: PathLike, *, image_size: int = 256, cache: bool = True,
                      cache_dir: Optional[PathLike] = None, clients: Optional[Sequence[str]] = None) -> Federation:
    """Read the PRR reference 2-D layout into a segmentation :class:`Federation` (module docstring);
    ``clients``: read only these sites (only their folders need to exist)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist; expected <root>/<site>/train.lst, images/, labels/")
    site_dirs = sorted(d for d in root.iterdir() if d.is_dir() and (d / "train.lst").is_file())
    if not site_dirs:
        raise ValueError(f"no site folders with a train.lst in {root}; expected <root>/{{A,B,C,D,E}}/train.lst")
    selected = select_clients("prostate_prr", [d.name for d in site_dirs], clients, where=f"in {root}")
    site_dirs = [d for d in site_dirs if d.name in selected]
    lists: Dict[str, Dict[str, List[str]]] = {}
    for site in site_dirs:
        lists[site.name] = {split: _read_list(site / f"{split}.lst") for split in SPLITS}
        if not lists[site.name]["train"]:
            raise ValueError(f"empty site: {site / 'train.lst'} lists no image; add training slices or remove the site")
        seen: Dict[str, str] = {}
        for split in SPLITS:
            for name in lists[site.name][split]:
                if name in seen:
                    raise ValueError(f"{site}: {name} is listed in {seen[name]}.lst and {split}.lst; a slice (and its "
                                     "case) must belong to one split")
                seen[name] = split

    def build() -> Federation:
        clients = []
        for site in site_dirs:
            parts = {}
            for split in SPLITS:
                pairs = [_load_slice(site / "images" / n, site / "labels" / n, image_size) for n in lists[site.name][split]]
                parts[split] = (ImageSplit(torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]))
                                if pairs else _empty_split(image_size))
            clients.append(ClientData(site.name, **parts))
        return Federation("prostate_prr", CLASS_NAMES, tuple(clients))

    files = [site / sub / n for site in site_dirs for split in SPLITS for n in lists[site.name][split]
             for sub in ("images", "labels") if (site / sub / n).is_file()]
    key = {"loader": "prostate_prr", "version": LOADER_VERSION, "image_size": image_size, "lists": lists,
           "files": file_fingerprint(files, root)}
    return load_or_build(_cache_dir(root, cache, cache_dir), "prostate_prr", key, build)


# ----------------------------------------------------------------------------- registry

def describe_saml(options: Mapping[str, Any]) -> FederationInfo:
    """The shape of ``prostate_saml``: its ``sites`` (or ``clients`` of them), background/prostate."""
    return FederationInfo("prostate_saml", "segmentation",
                          fixed_class_names("prostate_saml", CLASS_NAMES, options["class_names"]),
                          select_clients("prostate_saml", tuple(options["sites"]), options["clients"]))


def describe_prr(options: Mapping[str, Any]) -> Optional[FederationInfo]:
    """The shape of ``prostate_prr`` when ``clients`` names its sites (sorted, as the folders are
    read); else None (the sites are the folders on disk)."""
    clients = name_list(options["clients"], "clients", "prostate_prr")
    classes = fixed_class_names("prostate_prr", CLASS_NAMES, options["class_names"])
    return None if clients is None else FederationInfo("prostate_prr", "segmentation", classes, tuple(sorted(clients)))


@register_dataset("prostate_saml", task="segmentation", describe=describe_saml)
def build_saml(*, seed: int, image_size: int, root: Optional[PathLike] = None, sites: Sequence[str] = SAML_SITES,
               keep_empty_slices: bool = False, clip_percentile: float = 99.0,
               split_fractions: Sequence[float] = (0.6, 0.2, 0.2), split_file: Optional[PathLike] = None,
               cache: bool = True, cache_dir: Optional[PathLike] = None, clients: Optional[Sequence[str]] = None,
               class_names: Optional[Sequence[str]] = None) -> Federation:
    """Registry factory for :func:`load_prostate_saml` (``root`` from ``prr_data_root``)."""
    fixed_class_names("prostate_saml", CLASS_NAMES, class_names)
    if root is None:
        raise ValueError("dataset 'prostate_saml' needs the option root=<folder with BIDMC/, HK/, ...> (prr_data_root)")
    return load_prostate_saml(root, image_size=image_size, seed=seed, sites=tuple(sites),
                              keep_empty_slices=keep_empty_slices, clip_percentile=clip_percentile,
                              split_fractions=tuple(split_fractions), split_file=split_file, cache=cache,
                              cache_dir=cache_dir, clients=clients)


@register_dataset("prostate_prr", task="segmentation", describe=describe_prr)
def build_prr(*, seed: int, image_size: int, root: Optional[PathLike] = None, cache: bool = True,
              cache_dir: Optional[PathLike] = None, clients: Optional[Sequence[str]] = None,
              class_names: Optional[Sequence[str]] = None) -> Federation:
    """Registry factory for :func:`load_prostate_prr`; ``seed`` is unused (the splits are the shipped lists)."""
    fixed_class_names("prostate_prr", CLASS_NAMES, class_names)
    if root is None:
        raise ValueError("dataset 'prostate_prr' needs the option root=<folder with A/, B/, ...> (prr_data_root)")
    return load_prostate_prr(root, image_size=image_size, cache=cache, cache_dir=cache_dir, clients=clients)

