"""Sample inputs for `make demo`, drawn here (no downloads): a person and a garment.

Deliberately simple shapes: the reference backend is a development stand-in, and the
demo shows the plumbing, not a model.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SAMPLES = Path(__file__).resolve().parent / "samples"


def person(width: int = 768, height: int = 1024) -> Image.Image:
    image = Image.new("RGB", (width, height), (214, 206, 196))
    draw = ImageDraw.Draw(image)
    for y in range(height):  # a soft backdrop gradient
        shade = 226 - y * 40 // height
        draw.line([(0, y), (width, y)], fill=(shade, shade - 6, shade - 14))
    cx = width // 2
    draw.ellipse((cx - 80, 70, cx + 80, 250), fill=(233, 196, 166))  # head
    draw.rectangle((cx - 30, 240, cx + 30, 290), fill=(225, 188, 158))  # neck
    draw.rounded_rectangle((cx - 170, 280, cx + 170, 700), radius=60, fill=(70, 88, 120))  # torso
    draw.rectangle((cx - 150, 690, cx - 20, 1000), fill=(40, 44, 60))  # legs
    draw.rectangle((cx + 20, 690, cx + 150, 1000), fill=(40, 44, 60))
    draw.rounded_rectangle((cx - 240, 300, cx - 165, 640), radius=35, fill=(70, 88, 120))  # arms
    draw.rounded_rectangle((cx + 165, 300, cx + 240, 640), radius=35, fill=(70, 88, 120))
    return image.filter(ImageFilter.GaussianBlur(1.2))


def garment(width: int = 640, height: int = 720) -> Image.Image:
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    body = [(150, 60), (250, 40), (320, 90), (390, 40), (490, 60), (620, 200), (540, 260), (500, 220),
            (500, 690), (140, 690), (140, 220), (100, 260), (20, 200)]
    draw.polygon(body, fill=(196, 38, 64))
    for x in range(160, 490, 40):  # stripes
        draw.line([(x, 120), (x, 680)], fill=(232, 214, 90), width=10)
    draw.ellipse((270, 40, 370, 120), fill=(255, 255, 255))  # neckline
    return image


def ensure() -> tuple[Path, Path]:
    """Write the samples once; return (person.jpg, garment.png)."""
    SAMPLES.mkdir(exist_ok=True)
    person_path, garment_path = SAMPLES / "person.jpg", SAMPLES / "garment.png"
    if not person_path.exists():
        person().save(person_path, quality=92)
    if not garment_path.exists():
        garment().save(garment_path)
    return person_path, garment_path


if __name__ == "__main__":
    for path in ensure():
        print(path)
