from __future__ import annotations

import numpy
import pytest
from PIL import Image

from gpu_worker.backends.comfyui.nodes import Exchange, node_classes, to_pil, to_tensor
from comfyui_config.workflow import IMAGE_INPUT_NODE, IMAGE_OUTPUT_NODE


def test_images_round_trip_through_comfyuis_tensor_layout():
    pixels = numpy.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=numpy.uint8)
    tensor = to_tensor(Image.fromarray(pixels))
    assert tuple(tensor.shape) == (1, 5, 7, 3)  # batch, height, width, channels
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
    assert numpy.array_equal(numpy.asarray(to_pil(tensor[0])), pixels)


def test_the_tensor_holds_exactly_the_values_comfyuis_load_image_makes():
    pixels = numpy.arange(256 * 3, dtype=numpy.uint16).reshape(16, 16, 3).astype(numpy.uint8)
    tensor = to_tensor(Image.fromarray(pixels))
    assert tensor.dtype.is_floating_point and tensor.dtype.itemsize == 4
    # nodes.py LoadImage: numpy.array(i).astype(numpy.float32) / 255.0, bit for bit.
    assert numpy.array_equal(tensor[0].numpy().view(numpy.uint32),
                             (pixels.astype(numpy.float32) / 255.0).view(numpy.uint32))


def test_the_input_node_serves_the_backends_image_and_the_output_node_captures():
    exchange = Exchange()
    classes = node_classes(exchange)
    image = to_tensor(Image.new("RGB", (4, 3), (10, 20, 30)))
    exchange.put("job:person", image)
    loaded, mask = classes[IMAGE_INPUT_NODE]().load("job:person")
    assert loaded is image
    assert classes[IMAGE_INPUT_NODE].RETURN_TYPES == ("IMAGE", "MASK")  # LoadImage's outputs
    assert tuple(mask.shape) == (1, 64, 64)
    assert classes[IMAGE_OUTPUT_NODE].OUTPUT_NODE is True
    classes[IMAGE_OUTPUT_NODE]().capture(image, "job:out")
    assert tuple(exchange.pop("job:out").shape) == (3, 4, 3)  # the first image of the batch
    assert exchange.pop("job:out") is None


def test_an_image_nobody_put_is_a_clear_error():
    with pytest.raises(KeyError, match="no image under 'nope'"):
        node_classes(Exchange())[IMAGE_INPUT_NODE]().load("nope")


def test_the_reference_size_is_the_encoders_own_fixed_point():
    from gpu_worker.backends.comfyui.nodes import _encoder_size, reference_size

    assert reference_size(832, 1248) == (840, 1256)  # a 2:3 preset the encoder moves
    assert reference_size(880, 1184) == (880, 1184)  # 3:4 does not move
    assert reference_size(1024, 1024) == (1024, 1024)
    for size in [(832, 1248), (688, 1504), (1328, 800), (500, 700), (3000, 100)]:
        fixed = reference_size(*size)
        assert _encoder_size(*fixed) == fixed and fixed[0] % 8 == 0 and fixed[1] % 8 == 0
    assert reference_size(96, 160, divisor=8) == (96, 168)  # the CI engine's shrunk resolution
