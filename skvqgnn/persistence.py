"""Saving fitted estimators: the version stamp of pickles and a weights-only file format.

A joblib or pickle file of an estimator runs code when it is loaded: only load files you trust.
Pickles carry the skvqgnn version that wrote them, and unpickling under another version warns
with ``InconsistentVersionWarning``.

``save`` and ``load`` write and read a file that holds tensors and plain Python values only
(``str``, ``int``, ``float``, ``bool``, ``None``, lists, tuples, dicts): the estimator's class
name, its parameters and its fitted attributes. ``load`` reads it with
``torch.load(weights_only=True)``, which refuses any other object, and rebuilds the estimator from
this package's own code. Estimators with a user-defined ``Backbone`` cannot be saved this way, as
their layers exist only in the user's code.

A value is stored as itself when it is a tensor or a plain scalar, as a list or tuple of stored
values, or as a tagged dict ``{"__type__": tag, ...}`` (every dict of the file is tagged, plain
dicts included, so a tag cannot be confused with data).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils.validation import check_is_fitted

from ._version import (
    InconsistentVersionWarning,
    check_version,
    package_version,
)
from .convolutions import KINDS, Convolution
from .layers import VQGNN, Backbone
from .vq import AssignmentTable

__all__ = ["InconsistentVersionWarning", "save", "load"]

_FORMAT = "skvqgnn-weights"
_FORMAT_VERSION = 1
_ESTIMATORS = ("VQGNNClassifier", "VQGNNLinkPredictor")
_TAG = "__type__"
_PLAIN = (bool, int, float, str, bytes)  # bool first: it is an int


def _estimator_classes() -> dict[str, type]:
    from .classifier import VQGNNClassifier
    from .link import VQGNNLinkPredictor

    return {cls.__name__: cls for cls in (VQGNNClassifier, VQGNNLinkPredictor)}


# -- encoding ------------------------------------------------------------------------------------
def _is_fitted_attribute(name: str) -> bool:
    return name.endswith("_") and not name.startswith("__")


def _encode(value: Any, name: str, estimator: Any) -> Any:
    """``value`` as tensors and plain values; ``name`` (the attribute) is for error messages."""
    if value is None or type(value) in _PLAIN:
        return value
    if isinstance(value, np.generic):  # before the plain types: np.float64 is a float
        return {_TAG: "numpy_scalar", "array": _encode_array(np.asarray(value), name)}
    for plain in _PLAIN:  # subclasses (enums...) as their plain base, not pickled by class
        if isinstance(value, plain):
            return plain(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, np.ndarray):
        return _encode_array(value, name)
    if sp.issparse(value):
        csr = value.tocsr()
        return {
            _TAG: "sparse",
            "format": value.format,
            "sparray": isinstance(value, sp.sparray),
            "shape": tuple(int(s) for s in csr.shape),
            "indptr": _encode_array(csr.indptr, name),
            "indices": _encode_array(csr.indices, name),
            "data": _encode_array(csr.data, name),
        }
    if isinstance(value, list):
        return [_encode(v, name, estimator) for v in value]
    if isinstance(value, tuple):
        return tuple(_encode(v, name, estimator) for v in value)
    if isinstance(value, dict):
        return {
            _TAG: "dict",
            "items": [
                (_encode(k, name, estimator), _encode(v, name, estimator)) for k, v in value.items()
            ],
        }
    if isinstance(value, AssignmentTable):
        return {
            _TAG: "assignment_table",
            "n_codewords": int(value.n_codewords),
            "codes": _encode_array(value.codes, name),
            "usage": _encode_array(value.usage, name),
            "grad_codes": _encode_array(value.grad_codes, name),
            "grad_usage": _encode_array(value.grad_usage, name),
        }
    if isinstance(value, VQGNN):
        n_outputs = getattr(value, "built_with", {}).get("n_outputs")  # see _build_model
        if n_outputs is None:
            raise TypeError(f"cannot store attribute {name!r}: the output width is not recorded")
        return {
            _TAG: "vqgnn",
            "n_features": int(estimator.n_features_in_),
            "n_outputs": int(n_outputs),
            "kinds": [kind.name for kind in value.kinds],
            "state": _state(value),
        }
    if isinstance(value, torch.nn.Module):
        head = estimator._make_head()
        if head is None or type(head) is not type(value):
            raise TypeError(
                f"cannot store attribute {name!r}: {type(value).__name__} is neither the "
                "estimator's network nor its head"
            )
        return {_TAG: "head", "state": _state(value)}
    if isinstance(value, np.random.RandomState):
        return {_TAG: "random_state", "state": _encode(value.get_state(), name, estimator)}
    if isinstance(value, torch.device):
        return {_TAG: "torch_device", "device": str(value)}
    raise TypeError(
        f"cannot store attribute {name!r} of type {type(value).__module__}."
        f"{type(value).__qualname__} in the weights-only format"
    )


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _encode_array(a: np.ndarray, name: str) -> dict[str, Any]:
    """Numbers and booleans as a tensor; strings and objects as a flat list of plain values."""
    if a.dtype.kind in "biufc":
        native = np.array(a, dtype=a.dtype.newbyteorder("="), order="C")  # 0-d stays 0-d
        try:
            return {_TAG: "ndarray", "dtype": a.dtype.str, "data": torch.from_numpy(native)}
        except TypeError:  # a dtype torch has no counterpart for: fall through to a list
            pass
    values = [_array_element(v, name, a.dtype) for v in a.ravel().tolist()]
    dtype = "object" if a.dtype.kind == "O" else a.dtype.str
    return {_TAG: "ndarray", "dtype": dtype, "shape": tuple(a.shape), "values": values}


def _array_element(v: Any, name: str, dtype: np.dtype) -> Any:
    """An element of a string or object array as a plain value (NumPy scalars unwrapped)."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or type(v) in _PLAIN:
        return v
    for plain in _PLAIN:
        if isinstance(v, plain):
            return plain(v)
    raise TypeError(
        f"cannot store attribute {name!r}: an array of dtype {dtype} holds a value of type "
        f"{type(v).__name__}; only numbers, strings, bytes and None can be stored"
    )


# -- decoding ------------------------------------------------------------------------------------
def _decode(value: Any, estimator: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v, estimator) for v in value]
    if isinstance(value, tuple):
        return tuple(_decode(v, estimator) for v in value)
    if not isinstance(value, dict):
        return value
    tag = value.get(_TAG)
    if tag == "ndarray":
        return _decode_array(value)
    if tag == "numpy_scalar":
        return _decode_array(value["array"])[()]
    if tag == "dict":
        return {_decode(k, estimator): _decode(v, estimator) for k, v in value["items"]}
    if tag == "sparse":
        cls = sp.csr_array if value["sparray"] else sp.csr_matrix
        parts = (_decode_array(value[k]) for k in ("data", "indices", "indptr"))
        return cls(tuple(parts), shape=value["shape"]).asformat(value["format"])
    if tag == "assignment_table":
        codes = _decode_array(value["codes"])
        table = AssignmentTable(codes.shape[0], codes.shape[1], value["n_codewords"])
        table.codes = codes
        table.usage = _decode_array(value["usage"])
        table.grad_codes = _decode_array(value["grad_codes"])
        table.grad_usage = _decode_array(value["grad_usage"])
        return table
    if tag == "vqgnn":
        with torch.random.fork_rng(devices=[]):  # rebuilding draws initial weights
            kinds = [_convolution_kind(name) for name in value["kinds"]]
            model = estimator._build_model(value["n_features"], value["n_outputs"], kinds)
        model.load_state_dict(value["state"])
        return model.eval()
    if tag == "head":
        with torch.random.fork_rng(devices=[]):
            head = estimator._make_head()
        head.load_state_dict(value["state"])
        return head.eval()
    if tag == "random_state":
        rs = np.random.RandomState()
        rs.set_state(_decode(value["state"], estimator))
        return rs
    if tag == "torch_device":
        return torch.device(value["device"])
    raise ValueError(f"unknown entry {tag!r} in a skvqgnn weights file")


def _convolution_kind(name: str) -> type[Convolution]:
    """The built-in convolution kind stored under ``name``."""
    if name not in KINDS:
        raise ValueError(f"unknown convolution kind {name!r} in a skvqgnn weights file")
    return KINDS[name]


def _decode_array(entry: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(entry["dtype"])
    if "data" in entry:
        return entry["data"].numpy().astype(dtype, copy=True)
    if dtype.kind == "O":
        out = np.empty(len(entry["values"]), dtype=object)
        out[:] = entry["values"]
        return out.reshape(entry["shape"])
    return np.array(entry["values"], dtype=dtype).reshape(entry["shape"])


# -- public API ----------------------------------------------------------------------------------
def save(estimator: Any, path: str | os.PathLike) -> None:
    """Write a fitted estimator to ``path`` as tensors and plain values only (no pickled code).

    Parameters
    ----------
    estimator : VQGNNClassifier or VQGNNLinkPredictor
        Fitted, with a built-in backbone (a name such as ``"gcn"``, not a ``Backbone`` instance).
    path : str or path-like

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    ValueError
        If it is not one of the two estimators (subclasses included) or has a user-defined
        backbone.
    TypeError
        If a parameter or fitted attribute has a type the format cannot hold.

    See Also
    --------
    load : read the file back.

    Examples
    --------
    >>> import numpy as np
    >>> from skvqgnn import VQGNNClassifier
    >>> from skvqgnn.datasets import make_csbm
    >>> from skvqgnn.persistence import load, save
    >>> A, X, y, split = make_csbm(n_nodes=200, n_classes=2, n_features=8, random_state=0)
    >>> clf = VQGNNClassifier(max_epochs=2, batch_size=50, n_codewords=8, random_state=0)
    >>> clf = clf.fit(A, X, np.where(split.train_mask, y, -1))
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "clf.pt")
    >>> save(clf, path)
    >>> bool((load(path).predict_proba(A, X) == clf.predict_proba(A, X)).all())
    True
    """
    name = type(estimator).__name__
    classes = _estimator_classes()
    if classes.get(name) is not type(estimator):
        raise ValueError(
            f"the weights-only format stores {' and '.join(_ESTIMATORS)} only, not {name}; "
            "use joblib.dump (joblib.load runs code: load only files you trust)"
        )
    if isinstance(estimator.backbone, Backbone):
        raise ValueError(
            f"backbone={estimator.backbone!r} is a user-defined Backbone, which the weights-only "
            "format cannot rebuild without its code; use joblib.dump (joblib.load runs code: "
            "load only files you trust)"
        )
    check_is_fitted(estimator, "model_")
    params = {
        key: _encode(value, key, estimator)
        for key, value in estimator.get_params(deep=False).items()
    }
    attributes = {
        key: _encode(value, key, estimator)
        for key, value in vars(estimator).items()
        if _is_fitted_attribute(key)
    }
    torch.save(
        {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "skvqgnn_version": package_version(),
            "estimator": name,
            "params": params,
            "attributes": attributes,
        },
        path,
    )


def _guess_kind(path: str | os.PathLike) -> str:
    """What a file that ``torch.load`` refused most likely is, as the end of a message."""
    with open(path, "rb") as file:
        head = file.read(2)
    if head[:1] == b"\x80":  # a pickle protocol header: joblib.dump or pickle.dump
        return (
            ": it is a pickle (joblib.dump or pickle.dump); read it with joblib.load, which "
            "runs the code the file names, so only for files you trust"
        )
    if head == b"PK":
        return ": it is a zip archive, but not one that save wrote"
    return ""


def load(path: str | os.PathLike) -> Any:
    """Read an estimator written by ``save``, unpickling tensors and plain values only.

    The file is read with ``torch.load(path, weights_only=True)``: a file holding any other
    object is refused with an error before anything is built.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    VQGNNClassifier or VQGNNLinkPredictor
        Fitted, with the saved parameters; it predicts as the saved estimator did.

    Warns
    -----
    InconsistentVersionWarning
        If the file was written by another skvqgnn version.

    Raises
    ------
    ValueError
        If the file is not a skvqgnn weights file or names an unknown estimator.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note on foreign pickles
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever torch.load fails with, it is not ours
        kind = _guess_kind(path)
        raise ValueError(
            f"{os.fspath(path)!r} is not a skvqgnn weights file (written by "
            f"skvqgnn.persistence.save){kind}"
        ) from exc
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a skvqgnn weights file")
    if blob["format_version"] > _FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)!r} has format version {blob['format_version']}, newer than this "
            f"skvqgnn ({package_version()}) reads ({_FORMAT_VERSION})"
        )
    name = blob["estimator"]
    if name not in _ESTIMATORS:
        raise ValueError(
            f"{os.fspath(path)!r} holds an estimator {name!r}; only {', '.join(_ESTIMATORS)} "
            "can be loaded"
        )
    check_version(name, blob.get("skvqgnn_version"), weights_only=True)
    estimator = _estimator_classes()[name]()
    estimator.set_params(**{k: _decode(v, estimator) for k, v in blob["params"].items()})
    for key, value in blob["attributes"].items():
        setattr(estimator, key, _decode(value, estimator))
    return estimator
