"""``data.name = "wav"``: sound (or any 1D signal) as WAV files, one sub-folder per class.

Files are read with soundfile as float32. Every file must have the sample rate ``data.rate`` (0 = the rate
of the first file) and ``data.channels`` channels: a file at another rate is refused, naming both rates
(no silent resampling: a resampler's filter changes what the model hears; resample the files with a tool of
your choice first). Each signal is cut to its first ``data.length`` samples or padded with silence (zeros) at
the end, giving (N, channels, length) float32: the 1D models and augmentations apply. Decoded once into the
memory-mapped cache (:mod:`dltricks.data.cache`), split as :mod:`dltricks.data.folders` says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from dltricks.data.bundle import DataBundle
from dltricks.data.cache import Unreadable
from dltricks.data.folders import bundle_from_files, class_files
from dltricks.data.registry import register_dataset
from dltricks.errors import DltricksError
from dltricks.recipe import PATH, DataSpec

__all__ = ["WavSpec", "decode_wav", "load_wav"]

WAV_EXTS = (".wav",)


class WavSpec(DataSpec):
    name: str = "wav"
    root: str = Field(min_length=1, description="a folder with one sub-folder of .wav files per class (its name "
                                                "is the class), or a CSV with columns path,label",
                      json_schema_extra=PATH)
    test_root: str = Field("", description="a folder (or CSV) like root to test on; '' = hold out test_fraction",
                           json_schema_extra=PATH)
    length: int = Field(gt=0, description="samples per signal: longer files are cut to their first `length` "
                                          "samples, shorter ones padded with zeros at the end")
    rate: int = Field(0, ge=0, description="the sample rate (Hz) every file must have; a file at another rate "
                                           "is refused (not resampled); 0 = the first file's rate")
    channels: int = Field(1, ge=1, le=64, description="channels every file must have (1 = mono)")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="held out as test (stratified) without "
                                                                  "test_root")
    split_seed: int = Field(0, ge=0, description="fixes the test and validation splits across runs")
    skip_corrupt: bool = Field(False, description="leave out files that cannot be read or that have another "
                                                  "rate or channel count (and say how many)")


def decode_wav(path: str, length: int, rate: int, channels: int) -> np.ndarray:
    """One file -> (channels, length) float32; :class:`Unreadable` says why it cannot be used."""
    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            if f.samplerate != rate:
                raise Unreadable(f"sample rate {f.samplerate} Hz, but data.rate is {rate} Hz (resample the file, "
                                 "or set data.rate to it)")
            if f.channels != channels:
                raise Unreadable(f"{f.channels} channel(s), but data.channels is {channels}")
            a = f.read(frames=length, dtype="float32", always_2d=True)  # (frames, channels)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise Unreadable(f"not a readable WAV file ({str(e)[:100]})") from None
    out = np.zeros((channels, length), dtype=np.float32)
    out[:, :len(a)] = a.T
    return out


@register_dataset("wav", WavSpec)
def load_wav(spec: WavSpec, seed: int) -> DataBundle:
    import soundfile as sf

    files, labels = class_files(spec.root, "data.root", WAV_EXTS, "WAV")
    test = class_files(spec.test_root, "data.test_root", WAV_EXTS, "WAV") if spec.test_root else None
    rate = spec.rate
    if rate == 0:
        try:
            rate = sf.info(str(files[0])).samplerate
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise DltricksError(f"data.root: {files[0]}: not a readable WAV file ({str(e)[:100]})") from None
    settings = {"length": spec.length, "rate": rate, "channels": spec.channels}
    return bundle_from_files(spec, files, labels, test, (spec.channels, spec.length), decode_wav, settings,
                             f"data.root = {str(Path(spec.root))!r}")
