"""Image file I/O: lossless round trips checked bit for bit, and against independent decoders."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageOps

import restorex_io
from restorex_io import ImageFileError, decode_png, encode_png, read_image, write_image


def random_image(rng: np.random.Generator, channels: int, bit_depth: int, size=(13, 17)) -> np.ndarray:
    """(H, W, C) random samples; 16-bit ones are mostly not multiples of 257, so 8-bit truncation shows."""
    top = 65535 if bit_depth == 16 else 255
    array = rng.integers(0, top + 1, (*size, channels)).astype(np.uint16 if bit_depth == 16 else np.uint8)
    if bit_depth == 16:
        assert (array % 257 != 0).mean() > 0.9
    return array


def as_tensor(array: np.ndarray) -> torch.Tensor:
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    return torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32) / scale).unsqueeze(0)


def as_ints(tensor: torch.Tensor, bit_depth: int) -> np.ndarray:
    scale = 65535.0 if bit_depth == 16 else 255.0
    return np.rint(tensor[0].numpy().transpose(1, 2, 0) * scale).astype(np.int64)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_lossless_round_trip_is_bit_exact(tmp_path, suffix, bit_depth, channels):
    rng = np.random.default_rng(channels * 100 + bit_depth)
    array = random_image(rng, channels, bit_depth)
    path = write_image(tmp_path / f"img{suffix}", as_tensor(array), bit_depth=bit_depth)
    loaded = read_image(path)
    assert loaded.tensor.dtype == torch.float32 and loaded.tensor.shape == (1, channels, 13, 17)
    assert (loaded.bit_depth, loaded.format, loaded.path) == (bit_depth, "PNG" if suffix == ".png" else "TIFF", path)
    np.testing.assert_array_equal(as_ints(loaded.tensor, bit_depth), array)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_files_are_really_16bit_for_other_decoders(tmp_path, channels):
    array = random_image(np.random.default_rng(channels), channels, 16)
    png = write_image(tmp_path / "a.png", as_tensor(array), bit_depth=16)
    tif = write_image(tmp_path / "a.tif", as_tensor(array), bit_depth=16)
    np.testing.assert_array_equal(tifffile.imread(tif).reshape(array.shape), array)
    with Image.open(png) as im:
        if channels == 1:  # Pillow decodes 16-bit gray fully ...
            np.testing.assert_array_equal(np.asarray(im), array[..., 0])
        else:  # ... and 16-bit colour as its high bytes, which still checks our byte order and filtering
            np.testing.assert_array_equal(np.asarray(im), (array >> 8).astype(np.uint8))


def _reference_png(array: np.ndarray, filters: list[int], *, interlace: int = 0) -> bytes:
    """A deliberately plain, per-byte PNG encoder with a chosen filter for every row."""
    h, w, c = array.shape
    size = array.dtype.itemsize
    rows = array.astype(f">u{size}").view(np.uint8).reshape(h, -1).tolist()
    bpp, out = c * size, bytearray()
    for y, row in enumerate(rows):
        kind, prev = filters[y % len(filters)], rows[y - 1] if y else [0] * len(row)
        out.append(kind)
        for i, x in enumerate(row):
            a, b, cc = row[i - bpp] if i >= bpp else 0, prev[i], prev[i - bpp] if i >= bpp else 0
            p = a + b - cc
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
            paeth = a if pa <= pb and pa <= pc else b if pb <= pc else cc
            out.append((x - [0, a, b, (a + b) // 2, paeth][kind]) % 256)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, size * 8, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b"")


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_decoder_undoes_every_row_filter(channels):
    array = random_image(np.random.default_rng(7), channels, 16, size=(11, 6))
    data = _reference_png(array, filters=[0, 1, 2, 3, 4, 4, 3, 1])
    np.testing.assert_array_equal(decode_png(data), array)
    smooth = (np.add.outer(np.arange(9), np.arange(7))[..., None] * 4000 % 65536).astype(np.uint16).repeat(channels, 2)
    np.testing.assert_array_equal(decode_png(_reference_png(smooth, filters=[4, 3, 2, 1, 0])), smooth)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("filters", [[2], [0, 2, 2], [1, 2, 2, 0, 1], [2, 1, 0]])
def test_png_decoder_row_local_path_undoes_none_sub_up(channels, filters):
    # files whose rows use only None / Sub / Up take the vectorised path: a running sum down each column that
    # restarts at every None / Sub row, the reconstructed upper row of an Up row included
    array = random_image(np.random.default_rng(11), channels, 16, size=(13, 9))
    np.testing.assert_array_equal(decode_png(_reference_png(array, filters=filters)), array)
    gray8 = random_image(np.random.default_rng(12), 1, 8, size=(7, 5))
    np.testing.assert_array_equal(decode_png(_reference_png(gray8, filters=filters)), gray8)


@pytest.mark.parametrize("depth", [8, 16])
def test_png_encoder_up_filter_round_trips_and_says_so(depth):
    array = random_image(np.random.default_rng(13), 3, depth, size=(300, 7))  # > 256 rows: two encoder blocks
    data = encode_png(array, row_filter="up")
    assert decode_png(data).tobytes() == array.tobytes()
    raw = zlib.decompressobj().decompress(data[data.index(b"IDAT") + 4:])  # the CRC and IEND after it: unused_data
    stride = 7 * 3 * depth // 8 + 1
    assert {raw[i] for i in range(0, len(raw), stride)} == {2}  # every row Up-filtered
    with pytest.raises(ValueError, match="row_filter"):
        encode_png(array, row_filter="sub")


def test_png_decoder_matches_pillow_on_its_adaptive_filters(tmp_path):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:40, 0:50]
    array = np.stack([(xx * 5 + yy) % 256, yy * 6 % 256, rng.integers(0, 256, (40, 50))], -1).astype(np.uint8)
    Image.fromarray(array).save(tmp_path / "p.png", optimize=True)
    data = (tmp_path / "p.png").read_bytes()
    np.testing.assert_array_equal(decode_png(data), array)
    assert decode_png(encode_png(array)).tobytes() == array.tobytes()


def test_png_errors_name_the_file(tmp_path):
    array = random_image(np.random.default_rng(4), 3, 16)
    good = encode_png(array)
    cases = {
        "interlaced.png": (_reference_png(array, [0], interlace=1), "interlaced"),
        "truncated.png": (good[: len(good) // 2], "truncated"),
        "crc.png": (good[:45] + bytes([good[45] ^ 0xFF]) + good[46:], "CRC"),
    }
    for name, (data, why) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageFileError, match=why) as info:
            read_image(tmp_path / name)
        assert name in str(info.value)


def test_unsupported_and_corrupt_files(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "anim.gif")
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).bytes(300))
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "cut.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "cut.jpg").read_bytes()[:200])
    for name in ("anim.gif", "noise.png", "cut.jpg"):
        with pytest.raises(ImageFileError, match="PNG or TIFF") as info:
            read_image(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "absent.png")


def test_palette_cmyk_and_gray_alpha_are_converted(tmp_path):
    rgb = random_image(np.random.default_rng(5), 3, 8)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.tif")
    gray_alpha = random_image(np.random.default_rng(6), 2, 16)
    (tmp_path / "la16.png").write_bytes(encode_png(gray_alpha))
    with Image.open(tmp_path / "p.png") as im:
        np.testing.assert_array_equal(as_ints(read_image(tmp_path / "p.png").tensor, 8), np.asarray(im.convert("RGB")))
    key = tuple(int(v) for v in rgb[0, 0])
    Image.fromarray(rgb).save(tmp_path / "key.png", transparency=key)  # colour-key transparency -> alpha
    keyed = as_ints(read_image(tmp_path / "key.png").tensor, 8)
    np.testing.assert_array_equal(keyed[..., 3] == 0, (rgb == key).all(axis=2))
    np.testing.assert_array_equal(keyed[..., :3], rgb)
    assert read_image(tmp_path / "c.tif").tensor.shape == (1, 3, 13, 17)
    la = read_image(tmp_path / "la16.png")  # gray + alpha stays gray + alpha
    assert la.bit_depth == 16
    np.testing.assert_array_equal(as_ints(la.tensor, 16), gray_alpha)


@pytest.mark.parametrize(("suffix", "depth"), [(".png", 8), (".png", 16), (".tif", 8), (".tif", 16)])
def test_gray_alpha_round_trips_as_gray_alpha(tmp_path, suffix, depth):
    array = random_image(np.random.default_rng(7), 2, depth)
    tensor = torch.from_numpy(array.astype(np.float32) / (65535.0 if depth == 16 else 255.0)).permute(2, 0, 1)[None]
    loaded = read_image(write_image(tmp_path / f"la{suffix}", tensor, bit_depth=depth))
    assert loaded.tensor.shape[1] == 2 and loaded.bit_depth == depth
    np.testing.assert_array_equal(as_ints(loaded.tensor, depth), array)
    if depth == 8:  # Pillow has no 16-bit gray + alpha mode (our PNG codec and tifffile write those)
        with Image.open(tmp_path / f"la{suffix}") as im:
            assert im.mode == "LA"


def test_float_tiff_is_refused_naming_the_reason(tmp_path):
    tifffile.imwrite(tmp_path / "hdr.tif", np.random.default_rng(0).random((8, 8, 3), dtype=np.float32),
                     photometric="rgb")
    with pytest.raises(ImageFileError, match="32-bit floating-point TIFF is not supported.*8- or 16-bit"):
        read_image(tmp_path / "hdr.tif")


def test_tiff_16bit_rgb_planar_and_compressed_files_read_exactly(tmp_path):
    array = random_image(np.random.default_rng(8), 3, 16)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(array, -1, 0), photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "zip.tif", array, photometric="rgb", compression="zlib", predictor=True)
    for name in ("planar.tif", "zip.tif"):
        loaded = read_image(tmp_path / name)
        assert loaded.bit_depth == 16
        np.testing.assert_array_equal(as_ints(loaded.tensor, 16), array)


def test_jpeg_round_trip_is_close_and_gray_stays_gray(tmp_path):
    yy, xx = np.mgrid[0:48, 0:64] / 64.0
    smooth = torch.from_numpy(np.stack([xx, yy, (xx + yy) / 2]).astype(np.float32)).unsqueeze(0)
    for tensor in (smooth, smooth[:, :1]):
        loaded = read_image(write_image(tmp_path / "a.jpg", tensor, quality=95, overwrite=True))
        assert (loaded.format, loaded.bit_depth, loaded.tensor.shape) == ("JPEG", 8, tensor.shape)
        assert (loaded.tensor - tensor).abs().mean() < 2 / 255


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    array = random_image(np.random.default_rng(9), 3, 8, size=(8, 16))
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(tmp_path / "o.jpg", exif=exif, quality=100)
    loaded = read_image(tmp_path / "o.jpg")
    with Image.open(tmp_path / "o.jpg") as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    assert loaded.tensor.shape[2:] == ((16, 8) if orientation >= 5 else (8, 16))
    np.testing.assert_array_equal(as_ints(loaded.tensor, 8), expected)


def test_icc_profile_survives_a_round_trip(tmp_path):
    profile = b"not a real profile, but bytes to carry" * 3
    for name, depth in (("a.png", 16), ("a.tif", 16), ("b.png", 8), ("a.jpg", 8)):
        path = write_image(tmp_path / name, torch.rand(1, 3, 5, 6), bit_depth=depth, icc_profile=profile)
        assert read_image(path).icc_profile == profile


def test_write_refuses_what_the_format_cannot_hold(tmp_path):
    image = torch.rand(1, 4, 5, 6)
    bad = [
        (tmp_path / "a.jpg", image, 8, "JPEG"),
        (tmp_path / "b.jpg", image[:, :3], 16, "JPEG"),
        (tmp_path / "c.bmp", image, 8, "cannot write"),
        (tmp_path / "d.png", torch.full((1, 3, 2, 2), float("nan")), 8, "NaN"),
        (tmp_path / "e.png", torch.rand(2, 3, 4, 4), 8, "shape"),
        (tmp_path / "f.png", image, 12, "bit_depth"),
    ]
    for path, tensor, depth, message in bad:
        with pytest.raises(ImageFileError, match=message):
            write_image(path, tensor, bit_depth=depth)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, error):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous content")

    def fail_halfway(array, **kwargs):
        raise error

    monkeypatch.setattr(restorex_io.png16, "encode_png", fail_halfway)
    with pytest.raises(type(error)):
        write_image(target, torch.rand(1, 3, 8, 8), bit_depth=16, overwrite=True)

    def write_then_fail(f):
        f.write(b"half an image")
        raise error

    with pytest.raises(type(error)):
        restorex_io.publish(tmp_path / "new.png", write_then_fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    assert target.read_bytes() == b"previous content"


def test_clamps_and_rounds_out_of_range_values(tmp_path):
    tensor = torch.tensor([[-0.5, 0.4 / 255], [0.6 / 255, 1.5]]).view(1, 1, 2, 2)
    loaded = read_image(write_image(Path(tmp_path) / "c.png", tensor))
    assert as_ints(loaded.tensor, 8).ravel().tolist() == [0, 0, 1, 255]


# -- associated alpha, publishing without replacing, oversized and unreadable files -----------------------------
@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("channels", [2, 4])
def test_associated_alpha_tiff_is_read_straight_and_written_back_associated(tmp_path, bit_depth, channels):
    rng = np.random.default_rng(bit_depth + channels)
    top = 2**bit_depth - 1
    straight = rng.random((13, 17, channels))
    straight[..., -1] = np.maximum(straight[..., -1], 0.25)  # enough alpha to recover the colour closely
    straight[0, 0, -1] = 0.0  # one transparent pixel: its colour is lost, and comes back 0
    stored = np.concatenate([straight[..., :-1] * straight[..., -1:], straight[..., -1:]], axis=2)
    stored = np.rint(stored * top).astype(np.uint8 if bit_depth == 8 else np.uint16)
    tifffile.imwrite(tmp_path / "assoc.tif", stored, photometric="rgb" if channels == 4 else "minisblack",
                     extrasamples=("assocalpha",))
    loaded = read_image(tmp_path / "assoc.tif")
    assert loaded.associated_alpha and loaded.bit_depth == bit_depth
    got = loaded.tensor[0].permute(1, 2, 0).double().numpy()
    assert np.array_equal(np.rint(got[..., -1] * top), stored[..., -1])  # alpha as stored
    visible = straight[..., -1] > 0
    tolerance = 2.5 / (top * 0.25)  # one step of the stored colour, divided by the smallest alpha
    assert np.abs(got[..., :-1] - straight[..., :-1])[visible].max() < tolerance  # un-premultiplied
    assert (got[0, 0, :-1] == 0).all()
    write_image(tmp_path / "back.tif", loaded.tensor, bit_depth=bit_depth, associated_alpha=True)
    with tifffile.TiffFile(tmp_path / "back.tif") as tif:
        back, extra = tif.pages[0].asarray(), [int(e) for e in tif.pages[0].extrasamples]
    back = back.reshape(stored.shape)
    assert extra == [1]  # labelled associated again
    assert np.abs(back.astype(int) - stored.astype(int)).max() <= 1  # the same premultiplied samples


def test_unassociated_alpha_stays_unassociated(tmp_path):
    array = np.random.default_rng(0).integers(0, 65536, (9, 11, 4)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "straight.tif", array, photometric="rgb", extrasamples=("unassalpha",))
    loaded = read_image(tmp_path / "straight.tif")
    assert not loaded.associated_alpha
    assert np.array_equal(as_ints(loaded.tensor, 16), array)  # no division by alpha
    write_image(tmp_path / "back.tif", loaded.tensor, bit_depth=16, associated_alpha=loaded.associated_alpha)
    with tifffile.TiffFile(tmp_path / "back.tif") as tif:
        assert [int(e) for e in tif.pages[0].extrasamples] == [2]
        assert np.array_equal(tif.pages[0].asarray(), array)


def test_an_existing_file_is_never_replaced_without_overwrite(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"someone else's image")
    with pytest.raises(restorex_io.OutputExistsError, match=r"out\.png already exists.*--overwrite"):
        write_image(target, torch.rand(1, 3, 8, 8))
    assert target.read_bytes() == b"someone else's image"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary left
    write_image(target, torch.rand(1, 3, 8, 8), overwrite=True)
    assert read_image(target).tensor.shape == (1, 3, 8, 8)


def test_two_writers_racing_for_one_name_one_wins_the_other_is_told(tmp_path):
    """Both have written their file and publish at the same moment: the link is atomic, so exactly one wins."""
    import threading

    both_written = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def writer(tag: str) -> None:
        def write(f):
            f.write(tag.encode())
            both_written.wait(timeout=30)

        try:
            restorex_io.publish(tmp_path / "same.png", write)
            outcomes[tag] = "published"
        except restorex_io.OutputExistsError:
            outcomes[tag] = "refused"

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes.values()) == ["published", "refused"]
    (winner,) = [tag for tag, outcome in outcomes.items() if outcome == "published"]
    assert (tmp_path / "same.png").read_text() == winner
    assert [p.name for p in tmp_path.iterdir()] == ["same.png"]


def test_a_decompression_bomb_is_named_with_its_size_and_the_way_on(tmp_path, monkeypatch):
    from PIL import Image

    for name, depth in (("bomb.png", 8), ("bomb16.png", 16), ("bomb.tif", 16)):
        write_image(tmp_path / name, torch.rand(1, 3, 20, 30), bit_depth=depth)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 250)  # refuses more than 500 pixels: 20 x 30 = 600
    for name in ("bomb.png", "bomb16.png", "bomb.tif"):
        with pytest.raises(ImageFileError) as info:
            read_image(tmp_path / name)
        message = str(info.value)
        assert name in message and "600 pixels" in message and "safety limit of 500 pixels" in message
        assert "--max-pixels" in message and "use PNG or TIFF" not in message
    restorex_io.set_pixel_limit(600)
    assert read_image(tmp_path / "bomb.tif").tensor.shape == (1, 3, 20, 30)


def test_an_unreadable_file_is_named_with_the_problem(tmp_path, monkeypatch):
    from PIL import Image

    path = write_image(tmp_path / "locked.png", torch.rand(1, 3, 8, 8))
    if os.geteuid() != 0:  # a real refusal where the permissions apply
        path.chmod(0)
    else:  # root reads every file: the refusal the operating system gives others, raised where Pillow opens it
        def refuse(fp, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(fp))

        monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(ImageFileError, match="locked.png: permission denied.*chmod"):
        read_image(path)
