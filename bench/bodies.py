#!/usr/bin/env python3
"""Request bodies for the portcullis-full bench scenario: N different realistic API JSON documents of
about 2 KiB each (nested objects, prose, names, URLs, numbers), one per line, so no verdict cache can
serve a repeated body. Deterministic (seeded).

    bench/bodies.py FILE [N]    writes N bodies (default 256) to FILE
"""
import json
import random
import sys

FIRST = ["Ada", "Grace", "Seán", "Zoë", "Liam", "Noor", "Kenji", "Amara", "Mateo", "Ingrid", "Ravi", "Olga"]
LAST = ["O'Brien", "Lovelace", "Hopper", "Nakamura", "Okafor", "García", "Lindqvist", "Patel", "Novak", "D'Angelo"]
CITIES = ["Dublin", "Lagos", "Osaka", "Lyon", "Porto", "Austin", "Pune", "Gdańsk", "Quito", "Tromsø"]
WORDS = ("the order was placed after a long discussion about delivery windows and whether the select "
         "plan covers weekend drops while the customer asked for updates by email and a printed invoice "
         "please leave the parcel with the neighbour at number twelve if nobody answers the door").split()


def prose(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def body(rng: random.Random, i: int) -> dict:
    items = [
        {
            "sku": f"SKU-{rng.randint(10000, 99999)}",
            "name": rng.choice(["Desk lamp", "Notebook (A5, dotted)", "USB-C cable 2m", "Tea & biscuits", "Chair"]),
            "quantity": rng.randint(1, 9),
            "unit_price": round(rng.uniform(1, 300), 2),
            "note": prose(rng, rng.randint(6, 14)),
        }
        for _ in range(5)
    ]
    return {
        "order_id": f"ord-{i:06d}",
        "customer": {
            "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            "email": f"user{i}@example.com",
            "address": {"street": f"{rng.randint(1, 200)} Harbour Road", "city": rng.choice(CITIES),
                        "postcode": f"{rng.randint(1000, 99999)}", "country": rng.choice(["IE", "NG", "JP", "FR"])},
        },
        "items": items,
        "delivery": {"window": "09:00-12:00", "instructions": prose(rng, 45)},
        "links": {"receipt": f"https://shop.example.com/receipts/{i}?format=pdf&lang=en",
                  "tracking": f"https://track.example.org/p/{rng.randint(10**8, 10**9)}"},
        "tags": rng.sample(["gift", "express", "fragile", "b2b", "repeat", "promo-2026"], 3),
        "total": round(sum(x["quantity"] * x["unit_price"] for x in items), 2),
        "comment": prose(rng, 70),
    }


def main() -> None:
    out, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 256
    rng = random.Random(13)
    with open(out, "w") as f:
        for i in range(n):
            f.write(json.dumps(body(rng, i), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
