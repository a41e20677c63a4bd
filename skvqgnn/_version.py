"""The package's version and the stamp that pickles and weights-only files carry.

The lowest layer of the package: every module may import it, it imports none of them.
"""

from __future__ import annotations

import warnings

__all__ = ["InconsistentVersionWarning", "__version__", "check_version", "package_version"]

#: The installed version of skvqgnn, a string such as ``"0.1.0"``.
__version__ = "0.1.0"

PICKLE_VERSION_KEY = "_skvqgnn_version"  # the version entry of a pickled estimator's state


class InconsistentVersionWarning(UserWarning):
    """An estimator saved with one skvqgnn version is loaded with another.

    Parameters
    ----------
    estimator_name : str
    original_version : str or None
        The version that saved it; ``None`` when the file does not record one (written before
        versions were recorded).
    current_version : str
    weights_only : bool, default=False
        Whether it comes from a weights-only file (``load``) rather than a pickle.
    """

    def __init__(
        self,
        estimator_name: str,
        original_version: str | None,
        current_version: str,
        weights_only: bool = False,
    ):
        super().__init__(estimator_name, original_version, current_version, weights_only)
        self.estimator_name = estimator_name
        self.original_version = original_version
        self.current_version = current_version
        self.weights_only = weights_only

    def __str__(self) -> str:
        saved = (
            "an skvqgnn version that did not record itself"
            if self.original_version is None
            else f"skvqgnn {self.original_version}"
        )
        advice = (
            "Check its predictions, or refit it."
            if self.weights_only
            else "Refit it, or move it between versions with the weights-only format "
            "(skvqgnn.persistence.save / load)."
        )
        return (
            f"{self.estimator_name} was saved with {saved} and is loaded with skvqgnn "
            f"{self.current_version}; it may fail or give different results. {advice}"
        )


def package_version() -> str:
    """This package's version, read at call time (so that a test can change it)."""
    return __version__


def check_version(estimator_name: str, original: str | None, weights_only: bool = False) -> None:
    """Warn with ``InconsistentVersionWarning`` if ``original`` is not this package's version."""
    current = package_version()
    if original != current:
        warning = InconsistentVersionWarning(estimator_name, original, current, weights_only)
        warnings.warn(warning, stacklevel=3)
