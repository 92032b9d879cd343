"""Four small SQLite databases for the text-to-SQL benchmark (shop, school, library, flights): schemas and rows
generated from a seed, written with deterministic inserts so that the same seed gives byte-identical files.

Names never contain quotes (the question templates put values in SQL string literals), and every name that a
question looks a row up by (a customer's full name, a product, a book title, a flight number) is unique.
"""

from __future__ import annotations

import datetime
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

DB_NAMES: tuple[str, ...] = ("shop", "school", "library", "flights")

FIRST_NAMES = ("Alice", "Bruno", "Chen", "Daniela", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kofi",
               "Laura", "Mateo", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Samuel", "Tara", "Umar", "Vera",
               "William", "Ximena", "Yusuf", "Zoe", "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Hanna",
               "Ivan", "Julia", "Karl", "Lena", "Marco", "Nina", "Paul")
LAST_NAMES = ("Anderson", "Bauer", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen",
              "Kowalski", "Lopez", "Meyer", "Novak", "Olsen", "Petrov", "Quinn", "Rossi", "Schmidt", "Tanaka",
              "Usman", "Varga", "Weber", "Yamada", "Zhang", "Silva", "Moreau", "Nguyen", "Khan", "Murphy")
CITIES = (("Berlin", "Germany"), ("Munich", "Germany"), ("Paris", "France"), ("Lyon", "France"),
          ("Madrid", "Spain"), ("Barcelona", "Spain"), ("Rome", "Italy"), ("Milan", "Italy"),
          ("London", "United Kingdom"), ("Manchester", "United Kingdom"), ("Amsterdam", "Netherlands"),
          ("Vienna", "Austria"), ("Lisbon", "Portugal"), ("Warsaw", "Poland"), ("Prague", "Czech Republic"),
          ("Dublin", "Ireland"))

SCHEMAS: dict[str, tuple[str, ...]] = {
    "shop": (
        "CREATE TABLE customers (\n  customer_id INTEGER PRIMARY KEY,\n  first_name TEXT NOT NULL,\n"
        "  last_name TEXT NOT NULL,\n  email TEXT NOT NULL,\n  city TEXT NOT NULL,\n  country TEXT NOT NULL,\n"
        "  signup_date TEXT NOT NULL  -- YYYY-MM-DD\n)",
        "CREATE TABLE products (\n  product_id INTEGER PRIMARY KEY,\n  name TEXT NOT NULL UNIQUE,\n"
        "  category TEXT NOT NULL,\n  price REAL NOT NULL,\n  stock INTEGER NOT NULL\n)",
        "CREATE TABLE orders (\n  order_id INTEGER PRIMARY KEY,\n"
        "  customer_id INTEGER NOT NULL REFERENCES customers(customer_id),\n"
        "  order_date TEXT NOT NULL,  -- YYYY-MM-DD\n"
        "  status TEXT NOT NULL  -- pending, shipped, delivered, cancelled\n)",
        "CREATE TABLE order_items (\n  order_item_id INTEGER PRIMARY KEY,\n"
        "  order_id INTEGER NOT NULL REFERENCES orders(order_id),\n"
        "  product_id INTEGER NOT NULL REFERENCES products(product_id),\n  quantity INTEGER NOT NULL,\n"
        "  unit_price REAL NOT NULL\n)",
    ),
    "school": (
        "CREATE TABLE teachers (\n  teacher_id INTEGER PRIMARY KEY,\n  first_name TEXT NOT NULL,\n"
        "  last_name TEXT NOT NULL,\n  department TEXT NOT NULL,\n  hire_year INTEGER NOT NULL,\n"
        "  salary INTEGER NOT NULL\n)",
        "CREATE TABLE courses (\n  course_id INTEGER PRIMARY KEY,\n  title TEXT NOT NULL UNIQUE,\n"
        "  department TEXT NOT NULL,\n  credits INTEGER NOT NULL,\n"
        "  teacher_id INTEGER NOT NULL REFERENCES teachers(teacher_id)\n)",
        "CREATE TABLE students (\n  student_id INTEGER PRIMARY KEY,\n  first_name TEXT NOT NULL,\n"
        "  last_name TEXT NOT NULL,\n  major TEXT NOT NULL,\n  enrollment_year INTEGER NOT NULL,\n"
        "  gpa REAL NOT NULL,\n  city TEXT NOT NULL\n)",
        "CREATE TABLE enrollments (\n  enrollment_id INTEGER PRIMARY KEY,\n"
        "  student_id INTEGER NOT NULL REFERENCES students(student_id),\n"
        "  course_id INTEGER NOT NULL REFERENCES courses(course_id),\n"
        "  semester TEXT NOT NULL,  -- e.g. Fall 2023\n  grade INTEGER NOT NULL  -- 0 to 100\n)",
    ),
    "library": (
        "CREATE TABLE authors (\n  author_id INTEGER PRIMARY KEY,\n  name TEXT NOT NULL UNIQUE,\n"
        "  country TEXT NOT NULL,\n  birth_year INTEGER NOT NULL\n)",
        "CREATE TABLE books (\n  book_id INTEGER PRIMARY KEY,\n  title TEXT NOT NULL UNIQUE,\n"
        "  author_id INTEGER NOT NULL REFERENCES authors(author_id),\n  genre TEXT NOT NULL,\n"
        "  published_year INTEGER NOT NULL,\n  pages INTEGER NOT NULL\n)",
        "CREATE TABLE members (\n  member_id INTEGER PRIMARY KEY,\n  name TEXT NOT NULL UNIQUE,\n"
        "  city TEXT NOT NULL,\n  join_date TEXT NOT NULL,  -- YYYY-MM-DD\n"
        "  membership TEXT NOT NULL  -- basic, premium, student\n)",
        "CREATE TABLE loans (\n  loan_id INTEGER PRIMARY KEY,\n  book_id INTEGER NOT NULL REFERENCES books(book_id),\n"
        "  member_id INTEGER NOT NULL REFERENCES members(member_id),\n  loan_date TEXT NOT NULL,  -- YYYY-MM-DD\n"
        "  return_date TEXT  -- NULL while the book is still out\n)",
    ),
    "flights": (
        "CREATE TABLE airports (\n  airport_code TEXT PRIMARY KEY,\n  name TEXT NOT NULL,\n  city TEXT NOT NULL,\n"
        "  country TEXT NOT NULL\n)",
        "CREATE TABLE flights (\n  flight_id INTEGER PRIMARY KEY,\n  flight_number TEXT NOT NULL UNIQUE,\n"
        "  airline TEXT NOT NULL,\n  origin TEXT NOT NULL REFERENCES airports(airport_code),\n"
        "  destination TEXT NOT NULL REFERENCES airports(airport_code),\n"
        "  departure_date TEXT NOT NULL,  -- YYYY-MM-DD\n"
        "  duration_minutes INTEGER NOT NULL,\n  price REAL NOT NULL\n)",
        "CREATE TABLE passengers (\n  passenger_id INTEGER PRIMARY KEY,\n  first_name TEXT NOT NULL,\n"
        "  last_name TEXT NOT NULL,\n  nationality TEXT NOT NULL,\n  birth_year INTEGER NOT NULL\n)",
        "CREATE TABLE bookings (\n  booking_id INTEGER PRIMARY KEY,\n"
        "  flight_id INTEGER NOT NULL REFERENCES flights(flight_id),\n"
        "  passenger_id INTEGER NOT NULL REFERENCES passengers(passenger_id),\n"
        "  seat_class TEXT NOT NULL,  -- economy, business, first\n  booking_date TEXT NOT NULL  -- YYYY-MM-DD\n)",
    ),
}

Rows = dict[str, list[tuple]]  # table -> rows in insert order


def _day(rng: random.Random, first: str, last: str) -> str:
    lo, hi = datetime.date.fromisoformat(first).toordinal(), datetime.date.fromisoformat(last).toordinal()
    return datetime.date.fromordinal(rng.randint(lo, hi)).isoformat()


def _people(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n distinct (first, last) pairs, so a full name identifies one person."""
    pairs = [(f, la) for f in FIRST_NAMES for la in LAST_NAMES]
    return rng.sample(pairs, n)


def _price(rng: random.Random, lo: float, hi: float) -> float:
    return round(rng.uniform(lo, hi), 2)


_PRODUCTS = {  # category -> (price range, product names)
    "Electronics": ((20, 900), ("Wireless Headphones", "Smart Watch", "Bluetooth Speaker", "USB-C Charger",
                                "Mechanical Keyboard", "Gaming Mouse", "4K Monitor", "Portable SSD")),
    "Books": ((8, 60), ("Cookbook Classics", "World Atlas", "Poetry Collection", "Science Encyclopedia",
                        "Mystery Novel", "Travel Guide", "History of Rome", "Learn Python")),
    "Kitchen": ((10, 300), ("Chef Knife", "Cast Iron Pan", "Espresso Machine", "Blender", "Cutting Board",
                            "Stand Mixer", "Tea Kettle", "Rice Cooker")),
    "Toys": ((5, 120), ("Building Blocks", "Puzzle Box", "Toy Train", "Plush Bear", "Kite", "Board Game",
                        "Remote Control Car", "Yo-yo")),
    "Sports": ((10, 400), ("Yoga Mat", "Tennis Racket", "Running Shoes", "Football", "Dumbbell Set",
                           "Cycling Helmet", "Jump Rope", "Camping Tent")),
    "Garden": ((5, 250), ("Garden Hose", "Pruning Shears", "Flower Pot", "Lawn Mower", "Watering Can",
                          "Bird Feeder", "Seed Kit", "Wheelbarrow")),
    "Clothing": ((10, 200), ("Wool Sweater", "Rain Jacket", "Denim Jeans", "Cotton T-Shirt", "Winter Coat",
                             "Silk Scarf", "Leather Belt", "Baseball Cap")),
    "Beauty": ((4, 90), ("Face Cream", "Shampoo", "Lip Balm", "Hair Dryer", "Perfume", "Nail Polish",
                         "Sunscreen", "Body Lotion")),
}


def _shop(rng: random.Random) -> Rows:
    customers = []
    for i, (first, last) in enumerate(_people(rng, 140), 1):
        city, country = rng.choice(CITIES)
        email = f"{first.lower()}.{last.lower()}{i}@example.com"
        customers.append((i, first, last, email, city, country, _day(rng, "2020-01-01", "2024-06-30")))
    products = []
    for category, ((lo, hi), names) in _PRODUCTS.items():
        for name in names:
            products.append((len(products) + 1, name, category, _price(rng, lo, hi), rng.randint(0, 250)))
    orders, items = [], []
    statuses = ("pending", "shipped", "delivered", "delivered", "delivered", "cancelled")
    for order_id in range(1, 321):
        orders.append((order_id, rng.randint(1, len(customers)), _day(rng, "2022-01-01", "2024-12-31"),
                       rng.choice(statuses)))
        for product in rng.sample(products, rng.randint(1, 4)):
            items.append((len(items) + 1, order_id, product[0], rng.randint(1, 5), product[3]))
    return {"customers": customers, "products": products, "orders": orders, "order_items": items}


_DEPARTMENTS = {  # department -> course titles
    "Mathematics": ("Calculus I", "Linear Algebra", "Statistics", "Discrete Mathematics", "Number Theory"),
    "Computer Science": ("Intro to Programming", "Data Structures", "Databases", "Operating Systems",
                         "Machine Learning"),
    "Physics": ("Mechanics", "Electromagnetism", "Quantum Physics", "Thermodynamics", "Astrophysics"),
    "Chemistry": ("General Chemistry", "Organic Chemistry", "Biochemistry", "Physical Chemistry",
                  "Analytical Chemistry"),
    "Biology": ("Cell Biology", "Genetics", "Ecology", "Microbiology", "Human Anatomy"),
    "History": ("Ancient History", "Medieval Europe", "Modern History", "History of Science", "World Wars"),
    "Literature": ("Poetry Workshop", "The Novel", "Shakespeare", "Creative Writing", "World Literature"),
    "Economics": ("Microeconomics", "Macroeconomics", "Econometrics", "Game Theory", "Public Finance"),
}


def _school(rng: random.Random) -> Rows:
    departments = list(_DEPARTMENTS)
    teachers = []
    for i, (first, last) in enumerate(_people(rng, 28), 1):
        dept = departments[(i - 1) % len(departments)]
        teachers.append((i, first, last, dept, rng.randint(1995, 2023), rng.randrange(48_000, 120_001, 500)))
    courses = []
    for dept, titles in _DEPARTMENTS.items():
        staff = [t[0] for t in teachers if t[3] == dept]
        for title in titles:
            courses.append((len(courses) + 1, title, dept, rng.choice((3, 4, 5, 6)), rng.choice(staff)))
    students = []
    for i, (first, last) in enumerate(_people(rng, 220), 1):
        students.append((i, first, last, rng.choice(departments), rng.randint(2019, 2024),
                         round(rng.uniform(2.0, 4.0), 2), rng.choice(CITIES)[0]))
    enrollments = []
    semesters = ("Fall 2023", "Spring 2024", "Fall 2024")
    for student in students:
        for course in rng.sample(courses, rng.randint(1, 5)):
            enrollments.append((len(enrollments) + 1, student[0], course[0], rng.choice(semesters),
                                rng.randint(45, 100)))
    return {"teachers": teachers, "courses": courses, "students": students, "enrollments": enrollments}


_AUTHOR_COUNTRIES = ("United Kingdom", "United States", "France", "Germany", "Japan", "Nigeria", "Brazil", "India")
_GENRES = ("Fantasy", "Science Fiction", "Mystery", "Romance", "History", "Biography", "Poetry", "Thriller")
_TITLE_WORDS = (("The Silent", "The Last", "A Distant", "The Hidden", "The Broken", "Beyond the", "The Golden",
                 "Under the", "The Forgotten", "Children of the", "The Secret", "Winter"),
                ("River", "Empire", "Garden", "Star", "Mountain", "City", "Letter", "Forest", "Harbor", "Crown",
                 "Island", "Machine", "Lighthouse", "Storm"))


def _library(rng: random.Random) -> Rows:
    authors = []
    for i, (first, last) in enumerate(_people(rng, 40), 1):
        authors.append((i, f"{first} {last}", rng.choice(_AUTHOR_COUNTRIES), rng.randint(1900, 1990)))
    titles = rng.sample([f"{a} {b}" for a in _TITLE_WORDS[0] for b in _TITLE_WORDS[1]], 160)
    books = [(i, title, rng.randint(1, len(authors)), rng.choice(_GENRES), rng.randint(1950, 2024),
              rng.randint(90, 900)) for i, title in enumerate(titles, 1)]
    members = []
    for i, (first, last) in enumerate(_people(rng, 110), 1):
        members.append((i, f"{first} {last}", rng.choice(CITIES)[0], _day(rng, "2018-01-01", "2024-06-30"),
                        rng.choice(("basic", "basic", "premium", "student"))))
    loans = []
    for loan_id in range(1, 451):
        loan_date = _day(rng, "2023-01-01", "2024-12-15")
        returned = rng.random() < 0.85
        back = (datetime.date.fromisoformat(loan_date) + datetime.timedelta(days=rng.randint(3, 40))).isoformat()
        loans.append((loan_id, rng.randint(1, len(books)), rng.randint(1, len(members)), loan_date,
                      back if returned else None))
    return {"authors": authors, "books": books, "members": members, "loans": loans}


AIRPORTS = (("JFK", "John F. Kennedy International", "New York", "United States"),
            ("LGA", "LaGuardia", "New York", "United States"),
            ("LAX", "Los Angeles International", "Los Angeles", "United States"),
            ("ORD", "OHare International", "Chicago", "United States"),
            ("YYZ", "Toronto Pearson", "Toronto", "Canada"),
            ("LHR", "Heathrow", "London", "United Kingdom"), ("LGW", "Gatwick", "London", "United Kingdom"),
            ("CDG", "Charles de Gaulle", "Paris", "France"), ("ORY", "Orly", "Paris", "France"),
            ("FRA", "Frankfurt Airport", "Frankfurt", "Germany"), ("MUC", "Munich Airport", "Munich", "Germany"),
            ("AMS", "Schiphol", "Amsterdam", "Netherlands"), ("MAD", "Barajas", "Madrid", "Spain"),
            ("BCN", "El Prat", "Barcelona", "Spain"), ("FCO", "Fiumicino", "Rome", "Italy"),
            ("NRT", "Narita International", "Tokyo", "Japan"), ("HND", "Haneda", "Tokyo", "Japan"),
            ("SIN", "Changi", "Singapore", "Singapore"), ("SYD", "Kingsford Smith", "Sydney", "Australia"),
            ("DXB", "Dubai International", "Dubai", "United Arab Emirates"))
AIRLINES = (("Aurora Air", "AU"), ("Blue Horizon", "BH"), ("Coastal Airways", "CA"), ("Northwind", "NW"),
            ("Pacific Star", "PS"), ("Summit Air", "SA"), ("TransGlobal", "TG"), ("Zephyr Airlines", "ZE"))
_NATIONALITIES = ("American", "British", "French", "German", "Japanese", "Spanish", "Italian", "Canadian",
                  "Brazilian", "Indian")


def _flights(rng: random.Random) -> Rows:
    codes = [a[0] for a in AIRPORTS]
    flights, numbers = [], set()
    for flight_id in range(1, 241):
        airline, prefix = rng.choice(AIRLINES)
        number = f"{prefix}{rng.randint(100, 999)}"
        while number in numbers:
            number = f"{prefix}{rng.randint(100, 999)}"
        numbers.add(number)
        origin, destination = rng.sample(codes, 2)
        flights.append((flight_id, number, airline, origin, destination, _day(rng, "2024-01-01", "2024-12-31"),
                        rng.randint(55, 900), _price(rng, 49, 1500)))
    passengers = [(i, first, last, rng.choice(_NATIONALITIES), rng.randint(1940, 2010))
                  for i, (first, last) in enumerate(_people(rng, 180), 1)]
    bookings = []
    for booking_id in range(1, 561):
        flight = rng.choice(flights)
        booked = datetime.date.fromisoformat(flight[5]) - datetime.timedelta(days=rng.randint(1, 120))
        bookings.append((booking_id, flight[0], rng.randint(1, len(passengers)),
                         rng.choice(("economy", "economy", "economy", "business", "first")), booked.isoformat()))
    return {"airports": list(AIRPORTS), "flights": flights, "passengers": passengers, "bookings": bookings}


_GENERATORS: dict[str, Callable[[random.Random], Rows]] = {
    "shop": _shop, "school": _school, "library": _library, "flights": _flights}


def schema_sql(db: str) -> str:
    """The CREATE TABLE statements of database `db`, as the prompts show them."""
    if db not in SCHEMAS:
        raise ValueError(f"unknown database {db!r}; valid names are {list(DB_NAMES)}")
    return ";\n\n".join(SCHEMAS[db]) + ";"


def generate_rows(db: str, seed: int = 0) -> Rows:
    if db not in _GENERATORS:
        raise ValueError(f"unknown database {db!r}; valid names are {list(DB_NAMES)}")
    return _GENERATORS[db](random.Random(f"tao-bench-sql:{db}:{seed}"))  # str seeds hash with sha512: stable


def build_database(db: str, path: Path, seed: int = 0) -> Path:
    """Write database `db` to `path` (replaced if present): one transaction of inserts in a fixed order, so the
    file's bytes depend only on the seed and the SQLite version."""
    rows = generate_rows(db, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for ddl in SCHEMAS[db]:
            conn.execute(ddl)
        for table, table_rows in rows.items():
            marks = ", ".join("?" * len(table_rows[0]))
            conn.executemany(f"INSERT INTO {table} VALUES ({marks})", table_rows)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return path
