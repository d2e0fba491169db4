"""Datasets of the train_*.py scripts: images as (N, C, H, W) uint8 tensors with integer labels
(scikit-learn's bundled digits, torchvision's MNIST/CIFAR, or an npz file), text as character ids
(CPython's bundled docs, text8, Tiny Shakespeare, or a UTF-8 file) cut into training windows, and
the images' random shifts.
"""

import os
import re
import urllib.request
import zipfile

import numpy as np
import torch
import torch.nn.functional as F

import common

# ----------------------------------------------------------------------------------------------
# Image datasets: (N, C, H, W) uint8 tensors and integer labels
# ----------------------------------------------------------------------------------------------


def _split(x, y, seed, test_fraction=0.2):
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(x)))
    return x[perm[n_test:]], y[perm[n_test:]], x[perm[:n_test]], y[perm[:n_test]]


def _as_nchw(x):
    x = torch.as_tensor(np.asarray(x))
    # (N,H,W) or (N,H,W,C) -> (N,C,H,W)
    return x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)


def _torchvision_images(name, data_dir):
    try:
        import torchvision
    except ImportError:
        common.fail(
            f"--dataset {name} needs torchvision: install the build that matches your torch "
            "(see requirements.txt), or use --dataset digits / npz:PATH"
        )
    cls = {
        "mnist": torchvision.datasets.MNIST,
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
    }[name]
    try:
        train, test = (cls(data_dir, train=t, download=True) for t in (True, False))
    except Exception as e:  # noqa: BLE001  a failed download: say what to do
        common.fail(
            f"could not load or download {name} into {data_dir!r} ({type(e).__name__}: {e}). "
            f"Download it where you have internet (torchvision.datasets.{cls.__name__}) and point "
            "--data-dir at that folder, or convert it to npz:PATH"
        )
    return (
        _as_nchw(train.data),
        torch.as_tensor(train.targets),
        _as_nchw(test.data),
        torch.as_tensor(test.targets),
    )


def validation_split(data, seed):
    """The same data with the test split replaced by 20 % of the training split, held out
    (seeded)."""
    x_train, y_train, x_val, y_val = _split(data["x_train"], data["y_train"], seed)
    return {**data, "x_train": x_train, "y_train": y_train, "x_test": x_val, "y_test": y_val}


NPZ_FORMAT = (
    "x: images, (N, H, W) or (N, H, W, C) with C = 1 or 3, H = W, uint8 0..255 or float 0..1; y: "
    "(N,) integer "
    "class ids 0..K−1 (K <= 10000); optional x_test, y_test alike (else 20 % of x is held out)"
)


def _npz_images(path, key, x):
    """The array `key` of an npz as uint8 (N, C, H, W), or a one-line error saying what NPZ_FORMAT
    needs."""
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[3] not in (1, 3):
        common.fail(f"{path}: {key} has shape {x.shape}, channels first; store (N, H, W, C)")
    if (
        x.ndim not in (3, 4)
        or (x.ndim == 4 and x.shape[3] not in (1, 3))
        or x.shape[1] != x.shape[2]
    ):
        common.fail(f"{path}: {key} has shape {x.shape}; need {NPZ_FORMAT}")
    if x.dtype.kind == "f":
        if not (np.isfinite(x).all() and 0 <= x.min() and x.max() <= 1):
            common.fail(
                f"{path}: float {key} must lie in [0, 1] (it lies in [{x.min()}, {x.max()}]); or "
                "store uint8 0..255"
            )
        x = np.round(x * 255)
    elif x.dtype.kind not in "ui" or x.min() < 0 or x.max() > 255:
        common.fail(
            f"{path}: {key} must be uint8 0..255 or float 0..1, got {x.dtype} in [{x.min()}, "
            f"{x.max()}]"
        )
    return _as_nchw(x.astype(np.uint8))


def _npz_labels(path, key, y, n):
    """The array `key` of an npz as (n,) int64 class ids, or a one-line error."""
    if y.ndim != 1 or y.dtype.kind not in "ui" or len(y) != n:
        common.fail(
            f"{path}: {key} must be (N,) integer class ids matching its images (N = {n}), got "
            f"{y.dtype} {y.shape}" + (" (one-hot? store the class index)" if y.ndim == 2 else "")
        )
    if len(y) and not 0 <= y.min() <= y.max() < 10_000:
        common.fail(f"{path}: {key} must hold class ids in 0..9999, got [{y.min()}, {y.max()}]")
    return torch.as_tensor(y.astype(np.int64))


def _load_npz(path, seed):
    """npz:PATH → (x_train, y_train, x_test, y_test), every array checked against NPZ_FORMAT."""
    if not os.path.isfile(path):
        common.fail(f"--dataset npz:{path}: no such file; {NPZ_FORMAT}")
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except Exception as e:  # not an npz: numpy raises several kinds
        common.fail(f"{path} is not a readable .npz ({type(e).__name__}); {NPZ_FORMAT}")
    if not {"x", "y"} <= set(arrays) or ("x_test" in arrays) != ("y_test" in arrays):
        common.fail(
            f"{path} holds {sorted(arrays)}; need x and y, and x_test with y_test or neither "
            f"({NPZ_FORMAT})"
        )
    x = _npz_images(path, "x", arrays["x"])
    y = _npz_labels(path, "y", arrays["y"], len(x))
    if "x_test" not in arrays:
        if len(x) < 10:
            common.fail(
                f"{path}: {len(x)} images; need at least 10 (20 % of them are held out for testing)"
            )
        return _split(x, y, seed)
    x_test = _npz_images(path, "x_test", arrays["x_test"])
    if len(x) == 0 or len(x_test) == 0 or x.shape[1:] != x_test.shape[1:]:
        common.fail(
            f"{path}: x {tuple(x.shape)} and x_test {tuple(x_test.shape)} (as N, C, H, W) need "
            "images of one "
            f"shape and at least one of each"
        )
    return x, y, x_test, _npz_labels(path, "y_test", arrays["y_test"], len(x_test))


def load_images(name, data_dir, seed, validation=False):
    """digits (sklearn, offline), mnist, cifar10, cifar100 (torchvision) or npz:PATH → dict of
    tensors; with `validation`, the test split is 20 % of the training split (validation_split)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        # (1797, 1, 8, 8)
        x = torch.as_tensor(digits.images * (255 / 16)).round().to(torch.uint8)[:, None]
        x_train, y_train, x_test, y_test = _split(x, torch.as_tensor(digits.target), seed)
    elif name in ("mnist", "cifar10", "cifar100"):
        x_train, y_train, x_test, y_test = _torchvision_images(name, data_dir)
    elif name.startswith("npz:"):
        x_train, y_train, x_test, y_test = _load_npz(name[4:], seed)
    else:
        common.fail(
            f"unknown --dataset {name!r}; allowed: digits, mnist, cifar10, cifar100, npz:PATH"
        )
    data = dict(
        x_train=x_train.to(torch.uint8),
        y_train=y_train.long(),
        x_test=x_test.to(torch.uint8),
        y_test=y_test.long(),
        num_classes=int(max(y_train.max(), y_test.max())) + 1,
    )
    return validation_split(data, seed) if validation else data


UNK = "\ufffd"  # stands for characters of the validation/test text that the training split lacks
TEXT_URLS = {  # name: (URL, file name in --data-dir)
    "shakespeare": (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "tinyshakespeare.txt",
    ),
    "text8": ("http://mattmahoney.net/dc/text8.zip", "text8.zip"),
}


def _download(name, data_dir):
    """The file of a named corpus in --data-dir, downloaded from its usual URL if it is not there
    yet."""
    url, filename = TEXT_URLS[name]
    path = os.path.join(data_dir, filename)
    if not os.path.exists(path):

        def download(tmp):
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
                f.write(response.read())

        try:  # to a temporary file of its own: processes that download at once share none
            common.replace_atomic(path, download)
        except Exception as e:  # noqa: BLE001  a failed download: say what to do
            common.fail(
                f"could not download {name} from {url} into {data_dir!r} ({type(e).__name__}: "
                f"{e}). "
                f"Download it where you have internet, put it at {path} (or point --data-dir at "
                "its "
                "folder), or use --dataset txt:PATH"
            )
    return path


def _encode(text, codes, unk):
    """Characters → ids: the index of each code point in the sorted `codes`, `unk` for one not
    there."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    idx = np.searchsorted(codes, points).clip(max=len(codes) - 1)
    return torch.from_numpy(np.where(codes[idx] == points, idx, unk).astype(np.int64))


def unique_paragraphs(documents):
    """The documents with every paragraph (text between blank lines) that occurred before, in this
    order or earlier in the same document, removed: whitespace-insensitive, so no paragraph can be
    in two splits."""
    seen, out = set(), []
    for doc in documents:
        kept = []
        for paragraph in re.split(r"\n[ \t]*\n", doc):
            key = " ".join(paragraph.split())
            if key and key not in seen:
                seen.add(key)
                kept.append(paragraph)
        out.append("\n\n".join(kept))
    return out


def load_text(name, data_dir, seed):
    """pydoc, shakespeare, text8 or txt:PATH → dict of train/val/test id tensors and `chars` (id →
    character).

    text8: the standard first 90M / next 5M / last 5M characters. pydoc: CPython's
    `pydoc_data.topics`, each paragraph once (several topics contain others: without this, test text
    is also training text), topics in a seeded order, then 90 / 5 / 5 % contiguous (the running
    Python's docs: each release bundles other text); shakespeare and txt:PATH: 90 / 5 / 5 % in
    order. The vocabulary is the training split's characters, plus UNK if the other splits hold
    others.
    """
    if name == "pydoc":
        from pydoc_data.topics import topics

        keys = sorted(topics)
        unique = unique_paragraphs([topics[k] for k in keys])
        order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
        text = "\n\n".join(unique[i] for i in order)
    elif name == "shakespeare":
        with open(_download(name, data_dir), encoding="utf-8") as f:
            text = f.read()
    elif name == "text8":
        with zipfile.ZipFile(_download(name, data_dir)) as z:
            text = z.read("text8").decode("ascii")
    elif name.startswith("txt:"):
        path = name[4:]
        if not os.path.isfile(path):
            common.fail(f"--dataset {name}: no file {path!r}; txt:PATH needs a UTF-8 text file")
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            common.fail(
                f"--dataset {name}: not UTF-8 text (byte {e.start} cannot be decoded); convert it "
                "to UTF-8"
            )
        if "\x00" in text:
            common.fail(
                f"--dataset {name}: holds NUL characters, a binary file; txt:PATH needs a UTF-8 "
                "text file"
            )
    else:
        common.fail(f"unknown --dataset {name!r}; allowed: pydoc, shakespeare, text8, txt:PATH")
    if name == "text8":
        train, val, test = text[:90_000_000], text[90_000_000:95_000_000], text[95_000_000:]
    else:
        a, b = int(0.9 * len(text)), int(0.95 * len(text))
        train, val, test = text[:a], text[a:b], text[b:]
    codes = np.unique(np.frombuffer(train.encode("utf-32-le"), dtype=np.uint32))
    chars = [chr(c) for c in codes]
    if set(val + test) - set(chars):
        chars.append(UNK)
    return dict(
        train=_encode(train, codes, len(codes)),
        val=_encode(val, codes, len(codes)),
        test=_encode(test, codes, len(codes)),
        chars=chars,
    )


def decode(ids, chars):
    """Character ids → the text they stand for, by the `chars` of load_text."""
    return "".join(chars[i] for i in ids.tolist())


def random_shift(x, max_shift, generator=None):
    """Translate each image by up to ±max_shift pixels, zero padding: (N, C, H, W) -> same."""
    N, _, H, W = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (N, 2), generator=generator, device=x.device)
    theta = torch.zeros(N, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2], theta[:, 1, 2] = 2 * shifts[:, 0] / W, 2 * shifts[:, 1] / H
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def load_windows(cfg, window):
    """--dataset cut into windows of `window` characters: (data, training windows at every offset (a
    view), test windows with non-overlapping targets, --eval-sequences of them evenly spaced over
    the split (0: all))."""
    data = load_text(cfg.dataset, cfg.data_dir, cfg.seed)
    # choose settings on the validation text, never on the test split
    if getattr(cfg, "validation", False):
        data = {**data, "test": data["val"]}
    if min(len(data["train"]), len(data["test"])) < window:
        common.fail(
            f"--dataset {cfg.dataset}: {len(data['train'])} training / {len(data['test'])} test "
            "characters, "
            f"fewer than one sequence of {window}; use a longer text or a smaller --seq-len"
        )
    test = data["test"].unfold(0, window, cfg.seq_len)  # (S, window)
    if 0 < cfg.eval_sequences < len(test):
        test_eval = test[torch.linspace(0, len(test) - 1, cfg.eval_sequences).round().long()]
    else:
        test_eval = test
    return data, data["train"].unfold(0, window, 1), test, test_eval
