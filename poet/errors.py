"""Errors that reach users: each names the file and what was expected, so the CLIs can print it as one line."""

from __future__ import annotations


class PoetError(Exception):
    """Base class for bad input the user can fix (command-line tools print it without a traceback)."""


class CheckpointError(PoetError):
    """A checkpoint that is missing, unreadable, or not a POET checkpoint."""


class ImageError(PoetError):
    """An image that is missing, unreadable, or of a layout POET cannot take."""


class DatasetError(PoetError):
    """A COCO annotation file or image folder that lacks what POET needs."""


class ModelError(PoetError):
    """A deployed model (ONNX file or TensorRT engine) that is missing, unreadable, or not a poet-edge model."""


class BackendError(PoetError, ValueError):
    """A backend or backend option that cannot apply: an unknown name, a precision the backend or CPU cannot run.

    A ValueError too, as a wrong argument to ``PoseEstimator`` is.
    """


class ServerError(PoetError):
    """A Triton Inference Server that cannot be reached, does not serve the model asked for, or fails a request;
    or a server that cannot start (its port taken)."""


class OutputError(PoetError):
    """An output path that cannot be written (a file where a folder should be, no permission, a read-only disk)."""


class MissingExtraError(PoetError, ImportError):
    """A feature whose optional dependencies are not installed; the message names the extra that brings them.

    An ImportError too, so ``try: import ... except ImportError`` code keeps working.
    """
