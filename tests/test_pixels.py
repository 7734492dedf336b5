"""engine.data.pixels, the one pixel contract: uint8 HWC -> float [0, 1] NCHW and back, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data.pixels import to_tensor, to_uint8


def _image(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((5, 7), (1, 1, 5, 7)),  # grey 2-D
        ((5, 7, 1), (1, 1, 5, 7)),  # grey with a channel axis
        ((5, 7, 3), (1, 3, 5, 7)),  # HWC
        ((4, 5, 7, 3), (4, 3, 5, 7)),  # NHWC
    ],
)
def test_to_tensor_shapes_dtype_and_values(shape, expected):
    img = _image(*shape)
    x = to_tensor(img)
    assert tuple(x.shape) == expected and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    nhwc = img.reshape(expected[0], expected[2], expected[3], expected[1])
    np.testing.assert_array_equal(x.permute(0, 2, 3, 1).numpy(), nhwc.astype(np.float32) / np.float32(255))
    assert torch.equal(to_tensor(torch.from_numpy(img)), x)  # a uint8 tensor converts the same way


def test_to_tensor_keeps_channels_last_strides_and_reads_read_only_memory():
    img = _image(2, 6, 6, 3)
    x = to_tensor(img)
    assert x.is_contiguous(memory_format=torch.channels_last)  # a permuted view of NHWC storage
    frozen = img.copy()
    frozen.flags.writeable = False  # like the decoded cache's memmap
    assert torch.equal(to_tensor(frozen), x)
    assert frozen.flags.writeable is False


def test_to_tensor_refuses_what_is_not_uint8_pixels():
    with pytest.raises(TypeError, match="uint8"):
        to_tensor(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        to_tensor(np.zeros((1, 2, 4, 4, 3), np.uint8))


def test_round_trip_is_exact_for_every_grey_level():
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for img in (every, np.stack([every, every[::-1], every.T], -1), _image(3, 9, 11, 3, seed=1)):
        x = to_tensor(img)
        back = to_uint8(x)  # NCHW -> NHWC
        assert back.dtype == np.uint8
        expected = img.reshape(x.shape[0], x.shape[2], x.shape[3], x.shape[1])
        np.testing.assert_array_equal(back, expected)
        np.testing.assert_array_equal(to_uint8(x[0]), expected[0])  # CHW -> HWC


def test_to_uint8_clamps_then_rounds_like_the_pages_and_the_augmentation_preview_did():
    x = torch.tensor([-0.2, 0.0, 0.5, 1.0, 1.3]).view(1, 1, 5)
    assert to_uint8(x)[:, :, 0].ravel().tolist() == [0, 0, 128, 255, 255]  # 0.5 * 255 = 127.5 -> 128
    noisy = torch.from_numpy(np.random.default_rng(2).uniform(-0.1, 1.1, (2, 3, 17, 19)).astype(np.float32))
    page = np.round(noisy.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).astype(
        np.uint8
    )  # the Explain page's to_pixels
    preview = (noisy * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # augment.preview
    np.testing.assert_array_equal(to_uint8(noisy), page)
    np.testing.assert_array_equal(to_uint8(noisy), preview)
    with pytest.raises(ValueError, match="shape"):
        to_uint8(torch.zeros(4, 4))
