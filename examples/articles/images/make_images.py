"""Regenerate the illustrative sample images (Pillow only).

    /work/main/.venv/bin/python examples/articles/images/make_images.py
"""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
FONT_DIR = Path("/usr/share/fonts/opentype/noto")


def font(size, bold=False):
    path = FONT_DIR / ("NotoSansCJK-Bold.ttc" if bold else "NotoSansCJK-Regular.ttc")
    try:
        return ImageFont.truetype(str(path), size, index=2)  # index 2 = Simplified Chinese
    except OSError:
        return ImageFont.load_default(size)


def gradient(w, h, top, bottom):
    img = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(img)
    for y in range(h):
        t = y / (h - 1)
        d.line([(0, y), (w, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)))
    return img


def caption(img, title, sub):
    w, h = img.size
    band = Image.new("RGBA", (w, 110), (0, 0, 0, 110))
    img.paste(band, (0, h - 110), band)
    d = ImageDraw.Draw(img)
    d.text((40, h - 100), title, font=font(40, bold=True), fill="white")
    d.text((42, h - 45), sub, font=font(20), fill=(230, 236, 242))


def house(d, x, y, s, wall, roof):
    d.rectangle([x, y, x + s, y + s * 0.8], fill=wall)
    d.polygon([(x - s * 0.15, y), (x + s / 2, y - s * 0.55), (x + s * 1.15, y)], fill=roof)
    d.rectangle([x + s * 0.4, y + s * 0.35, x + s * 0.6, y + s * 0.8], fill=roof)


def snowflake(d, x, y, r, c=(255, 255, 255)):
    for dx, dy in ((r, 0), (r / 2, r * 0.87), (-r / 2, r * 0.87)):
        d.line([(x - dx, y - dy), (x + dx, y + dy)], fill=c, width=3)


def winter_cover():
    img = gradient(900, 500, (28, 64, 112), (150, 190, 222))
    d = ImageDraw.Draw(img)
    d.ellipse([-200, 270, 1100, 670], fill=(236, 242, 248))
    for i, (x, s) in enumerate([(120, 110), (300, 140), (520, 120), (700, 100)]):
        house(d, x, 290 - s * 0.4, s, (196, 120, 80) if i % 2 else (214, 170, 110), (150, 40, 40))
    for x, y, r in [(80, 70, 18), (240, 40, 12), (420, 90, 22), (620, 50, 14), (800, 110, 20), (860, 30, 10)]:
        snowflake(d, x, y, r)
    caption(img, "冬春救助 温暖过冬", "省民政厅 · 困难群众基本生活保障")
    img.save(HERE / "winter-relief-cover.jpg", quality=85, optimize=True)


def winter_inline():
    img = gradient(800, 450, (246, 238, 226), (222, 205, 180))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 300, 800, 450], fill=(190, 168, 140))
    colours = [(180, 50, 45), (60, 110, 160), (210, 150, 60)]
    for row in range(3):  # stacked relief supplies
        for col in range(4 - row):
            x, y = 200 + col * 90 + row * 45, 240 - row * 70
            d.rectangle([x, y, x + 80, y + 64], fill=colours[(row + col) % 3], outline=(255, 255, 255), width=3)
            d.line([(x + 40, y), (x + 40, y + 64)], fill=(255, 255, 255), width=2)
    caption(img, "救助物资发放到户", "示意图：棉被、棉衣、取暖用品")
    img.save(HERE / "winter-relief-inline.jpg", quality=85, optimize=True)


def flood_cover():
    img = gradient(900, 500, (70, 90, 110), (170, 190, 200))
    d = ImageDraw.Draw(img)
    for i in range(5):  # rolling water
        y = 300 + i * 30
        d.rectangle([0, y + 12, 900, 500], fill=(40 + i * 10, 90 + i * 12, 140 + i * 8))
        for x in range(-40, 920, 80):
            d.ellipse([x, y, x + 80, y + 24], fill=(40 + i * 10, 90 + i * 12, 140 + i * 8))
    d.ellipse([520, 275, 880, 320], fill=(110, 140, 90))
    d.polygon([(560, 290), (660, 190), (760, 290)], fill=(30, 120, 200))  # relief tents on higher ground
    d.polygon([(680, 290), (760, 215), (840, 290)], fill=(30, 120, 200))
    for x0, x1, top in ((560, 760, 190), (680, 840, 215)):  # tent doors
        mid = (x0 + x1) / 2
        d.polygon([(mid - 22, 290), (mid, top + 45), (mid + 22, 290)], fill=(240, 200, 80))
    for cx, cy in ((170, 40), (390, 30)):  # clouds
        for dx, r in ((-50, 28), (0, 40), (50, 30)):
            d.ellipse([cx + dx - r, cy - r, cx + dx + r, cy + r], fill=(205, 212, 220))
    for x, y in [(110, 80), (200, 95), (340, 75), (430, 90)]:  # rain
        for k in range(4):
            d.line([(x + k * 22, y + k * 9), (x + k * 22 - 10, y + k * 9 + 28)], fill=(220, 230, 240), width=2)
    caption(img, "防汛救灾 安置群众", "省民政厅 · 灾情报告与生活救助")
    img.save(HERE / "flood-relief-cover.jpg", quality=85, optimize=True)


if __name__ == "__main__":
    winter_cover()
    winter_inline()
    flood_cover()
    for p in sorted(HERE.glob("*.jpg")):
        print(p.name, Image.open(p).size, p.stat().st_size, "bytes")
