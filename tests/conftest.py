"""Shared fixtures: a tiny synthetic SQL corpus and one real `--quick` export of sql-autocomplete.

The corpus is made up here (seeded, so every run writes the same bytes) and never read from
../shared/data: about a dozen databases with 3-5 tables of Spider-like identifiers and ~25
templated queries each (SELECT / WHERE / JOIN / GROUP BY / ORDER BY / count(*) ...), varied
enough that the quick recipe's 320-token BPE vocabulary fills up.

`quick_export` runs `python -m export sql-autocomplete --quick` once per test session (a few
seconds of training) and yields the paths the tests need.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPE = "sql-autocomplete"
TABLES = {  # table -> candidate columns (the first is the key)
    "singer": ["Singer_ID", "Name", "Country", "Song_Name", "Song_release_year", "Age", "Is_male"],
    "concert": ["concert_ID", "concert_Name", "Theme", "Stadium_ID", "Year"],
    "stadium": ["Stadium_ID", "Location", "Name", "Capacity", "Highest", "Lowest", "Average"],
    "department": ["Department_ID", "Name", "Creation", "Ranking", "Budget_in_Billions", "Num_Employees"],
    "head": ["head_ID", "name", "born_state", "age"],
    "student": ["StuID", "LName", "Fname", "Age", "Sex", "Major", "Advisor", "city_code"],
    "course": ["course_id", "title", "dept_name", "credits"],
    "instructor": ["ID", "name", "dept_name", "salary"],
    "airport": ["AirportCode", "AirportName", "City", "Country", "CountryAbbrev"],
    "flight": ["flno", "origin", "destination", "distance", "departure_date", "price", "aid"],
    "aircraft": ["aid", "name", "distance"],
    "employee": ["Employee_ID", "Name", "Age", "City", "Salary", "hire_date"],
    "shop": ["Shop_ID", "Name", "Location", "District", "Number_products", "Manager_name"],
    "customer": ["customer_id", "customer_name", "customer_phone", "customer_email", "date_became_customer"],
    "orders": ["order_id", "customer_id", "order_status", "date_order_placed", "order_details"],
    "product": ["product_id", "product_name", "product_price", "product_category", "color_code"],
    "book": ["Book_ID", "Title", "Writer", "Issues", "Publication_Date"],
    "museum": ["Museum_ID", "Name", "Num_of_Staff", "Open_Year"],
    "visitor": ["ID", "Name", "Level_of_membership", "Age"],
    "team": ["Team_id", "Name", "Mascot", "Hometown", "Wins", "Losses"],
    "player": ["Player_ID", "Player_name", "Position", "Team_id", "Points", "Height", "Weight"],
    "match": ["Match_ID", "Date", "Venue", "Score", "Result", "Competition"],
    "car_makers": ["Id", "Maker", "FullName", "Country"],
    "cars_data": ["Id", "MPG", "Cylinders", "Edispl", "Horsepower", "Weight", "Accelerate", "Year"],
    "pets": ["PetID", "PetType", "pet_age", "weight"],
    "dorm": ["dormid", "dorm_name", "student_capacity", "gender"],
    "apartment": ["apt_id", "building_id", "apt_type_code", "bathroom_count", "bedroom_count", "room_count"],
    "election": ["Election_ID", "Counties_Represented", "District", "Delegate", "Party", "Committee"],
    "wine": ["No", "Grape", "Winery", "Appelation", "State", "Price", "Score", "Cases", "Drink"],
    "ship": ["Ship_ID", "Name", "Type", "Built_Year", "Class", "Flag", "Tonnage"],
    "party": ["Party_ID", "Party_Theme", "Location", "First_year", "Last_year", "Number_of_hosts"],
    "document": ["Document_ID", "Template_ID", "Document_Name", "Document_Description", "Other_Details"],
}
WORDS = ["France", "Paris", "Boston", "Alice", "green", "Open", "active", "Smith", "Texas", "John", "Red"]
TEMPLATES = [
    "SELECT count(*) FROM {t}",
    "SELECT {c} FROM {t}",
    "SELECT {c} ,  {c2} FROM {t}",
    "SELECT DISTINCT {c} FROM {t}",
    "SELECT {c} FROM {t} WHERE {c2}  =  '{w}'",
    "SELECT {c} FROM {t} WHERE {c2}  >  {n}",
    "SELECT count(*) FROM {t} WHERE {c}  <  {n}",
    "SELECT {c} FROM {t} ORDER BY {c2} DESC",
    "SELECT {c} FROM {t} ORDER BY {c2} ASC LIMIT {k}",
    "SELECT {c} ,  count(*) FROM {t} GROUP BY {c}",
    "SELECT {c} FROM {t} GROUP BY {c} HAVING count(*)  >=  {k}",
    "SELECT avg({c}) ,  max({c}) ,  min({c}) FROM {t}",
    "SELECT sum({c}) FROM {t} WHERE {c2}  !=  '{w}'",
    "SELECT T1.{c} FROM {t} AS T1 JOIN {u} AS T2 ON T1.{k1}  =  T2.{k2}",
    "SELECT T2.{d} ,  count(*) FROM {t} AS T1 JOIN {u} AS T2 ON T1.{k1}  =  T2.{k2} GROUP BY T2.{d}",
    "SELECT {c} FROM {t} WHERE {c2} LIKE '%{w}%'",
    "SELECT {c} FROM {t} WHERE {c2} BETWEEN {n} AND {m}",
    "SELECT {c} FROM {t} WHERE {k1} NOT IN (SELECT {k2} FROM {u})",
    "SELECT {c} FROM {t} EXCEPT SELECT {c} FROM {t} WHERE {c2}  =  '{w}'",
    "SELECT count(DISTINCT {c}) FROM {t}",
]
N_DATABASES = 12
QUERIES_PER_DB = 25


def make_sql_rows(seed: int = 0) -> list[dict]:
    """Synthetic rows {"db_id", "schema", "sql"}: deterministic for a seed."""
    rng = random.Random(seed)
    names = sorted(TABLES)
    rows = []
    for d in range(N_DATABASES):
        tables = rng.sample(names, rng.randint(3, 5))
        schema = {t: [TABLES[t][0]] + rng.sample(TABLES[t][1:], rng.randint(2, len(TABLES[t]) - 1)) for t in tables}
        db_id = f"{tables[0]}_{tables[1]}_{d}"
        text = "\n".join(f"{t}({', '.join(cols)})" for t, cols in schema.items())
        seen = set()
        while len(seen) < QUERIES_PER_DB:
            t, u = rng.sample(tables, 2)
            c, c2 = rng.choice(schema[t]), rng.choice(schema[t])
            sql = rng.choice(TEMPLATES).format(
                t=t, u=u, c=c, c2=c2, d=rng.choice(schema[u]), k1=schema[t][0], k2=rng.choice(schema[u]),
                w=rng.choice(WORDS), n=rng.randint(1, 2000), m=rng.randint(2001, 9999), k=rng.randint(1, 10),
            )
            if sql not in seen:
                seen.add(sql)
                rows.append({"db_id": db_id, "schema": text, "sql": sql})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def quick_recipe(name: str = RECIPE):
    """The `--quick` recipe, as `python -m export --quick` runs it."""
    from export.recipes import get_recipe

    return get_recipe(name, quick=True)


def subprocess_env() -> dict:
    env = dict(os.environ)
    paths = [str(ROOT / "pysrc"), str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("TQDM_DISABLE", "1")
    return env


@dataclass(frozen=True)
class QuickExport:
    data_dir: Path  # holds sql/train.jsonl
    out_dir: Path  # --out: the model folder is out_dir / RECIPE
    runs_dir: Path  # --runs: checkpoints and splits are runs_dir / RECIPE
    log: str  # stdout + stderr of the export

    @property
    def model_dir(self) -> Path:
        return self.out_dir / RECIPE

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / RECIPE


@pytest.fixture(scope="session")
def sql_rows() -> list[dict]:
    return make_sql_rows()


@pytest.fixture(scope="session")
def sql_data_dir(tmp_path_factory, sql_rows) -> Path:
    data_dir = tmp_path_factory.mktemp("data")
    write_jsonl(data_dir / "sql" / "train.jsonl", sql_rows)
    return data_dir


@pytest.fixture(scope="session")
def quick_export(tmp_path_factory, sql_data_dir) -> QuickExport:
    """One real `python -m export sql-autocomplete --quick` into temporary folders."""
    work = tmp_path_factory.mktemp("quick_export")
    out, runs = work / "models", work / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "export", RECIPE, "--quick", "--data", str(sql_data_dir),
         "--out", str(out), "--runs", str(runs)],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"quick export failed (exit {proc.returncode}):\n{log[-4000:]}")
    return QuickExport(sql_data_dir, out, runs, log)
