"""The text-to-SQL question templates: per database 4 easy (one-table filter, count, aggregate), 2 medium (ORDER BY
with LIMIT, GROUP BY) and 2 hard (a two-table join) templates, each with 2+ paraphrases and its gold SQL.

`params` lists candidate parameter values: a SQL query on the template's database (its column names are the
placeholders) or a tuple of dicts; `numbers` are crossed with them. `order_keys` is the sort key of the ordered
rows, in order (a query with placeholders): the generator re-draws instances whose first n+1 keys are not all
distinct, so neither the LIMIT boundary nor the order inside it is ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DIFFICULTIES = ("easy", "medium", "hard")


@dataclass(frozen=True)
class SqlTemplate:
    key: str
    db: str
    difficulty: str
    table: str  # the main table: a listing must return fewer rows than it holds (never the whole table)
    questions: tuple[str, ...]  # paraphrases, str.format templates
    gold: str
    params: str | tuple[dict[str, Any], ...] = ({},)
    numbers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    order_keys: str | None = None  # with a "n" parameter: the LIMIT

    def __post_init__(self) -> None:
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"template {self.key}: difficulty must be one of {DIFFICULTIES}, got {self.difficulty!r}")
        if len(self.questions) < 2:
            raise ValueError(f"template {self.key}: give at least 2 paraphrases")


_N = (2, 3, 4, 5)
_MONTHS = tuple({"mm": f"{i:02d}", "month": m} for i, m in enumerate(
    ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
     "December"), 1))

TEMPLATES: tuple[SqlTemplate, ...] = (
    # ---------------------------------------------------------------- shop
    SqlTemplate("shop_customers_in_city", "shop", "easy", "customers",
                ("How many customers live in {city}?", "What is the number of customers from {city}?",
                 "Count the customers whose city is {city}."),
                "SELECT COUNT(*) FROM customers WHERE city = '{city}'",
                "SELECT DISTINCT city FROM customers ORDER BY city"),
    SqlTemplate("shop_product_price", "shop", "easy", "products",
                ("What is the price of the product '{name}'?", "How much does the {name} cost?",
                 "Give the price of the product named {name}."),
                "SELECT price FROM products WHERE name = '{name}'",
                "SELECT name FROM products ORDER BY product_id"),
    SqlTemplate("shop_cheap_in_category", "shop", "easy", "products",
                ("List the names of {category} products that cost less than {price} dollars.",
                 "Which products in the {category} category have a price below {price}? Give their names.",
                 "Find the names of all products in category {category} priced under {price}."),
                "SELECT name FROM products WHERE category = '{category}' AND price < {price}",
                "SELECT DISTINCT category FROM products ORDER BY category",
                {"price": (20, 30, 50, 75, 100, 150, 200)}),
    SqlTemplate("shop_avg_price_category", "shop", "easy", "products",
                ("What is the average price of products in the {category} category?",
                 "Compute the average product price for the category {category}.",
                 "On average, how much does a product in the {category} category cost?"),
                "SELECT AVG(price) FROM products WHERE category = '{category}'",
                "SELECT DISTINCT category FROM products ORDER BY category"),
    SqlTemplate("shop_top_expensive", "shop", "medium", "products",
                ("What are the names of the {n} most expensive products in the {category} category, most "
                 "expensive first?",
                 "List the top {n} {category} products by price, highest price first. Give their names."),
                "SELECT name FROM products WHERE category = '{category}' ORDER BY price DESC LIMIT {n}",
                "SELECT DISTINCT category FROM products ORDER BY category", {"n": _N},
                "SELECT price FROM products WHERE category = '{category}' ORDER BY price DESC"),
    SqlTemplate("shop_low_stock_by_category", "shop", "medium", "products",
                ("For each category, how many products have fewer than {stock} units in stock?",
                 "Count, per category, the products whose stock is below {stock} units."),
                "SELECT category, COUNT(*) FROM products WHERE stock < {stock} GROUP BY category",
                numbers={"stock": (30, 50, 60, 80, 100, 120, 150)}),
    SqlTemplate("shop_orders_of_customer", "shop", "hard", "orders",
                ("How many orders has {first_name} {last_name} placed?",
                 "Count the orders made by the customer {first_name} {last_name}."),
                "SELECT COUNT(*) FROM orders JOIN customers ON orders.customer_id = customers.customer_id "
                "WHERE customers.first_name = '{first_name}' AND customers.last_name = '{last_name}'",
                "SELECT first_name, last_name FROM customers WHERE customer_id IN (SELECT customer_id FROM orders) "
                "ORDER BY customer_id"),
    SqlTemplate("shop_quantity_sold", "shop", "hard", "order_items",
                ("What is the total quantity sold of the product '{name}'?",
                 "How many units of the {name} have been ordered in total?"),
                "SELECT SUM(order_items.quantity) FROM order_items JOIN products "
                "ON order_items.product_id = products.product_id WHERE products.name = '{name}'",
                "SELECT name FROM products WHERE product_id IN (SELECT product_id FROM order_items) "
                "ORDER BY product_id"),
    # ---------------------------------------------------------------- school
    SqlTemplate("school_students_in_major", "school", "easy", "students",
                ("How many students major in {major}?", "What is the number of students whose major is {major}?",
                 "Count the students majoring in {major}."),
                "SELECT COUNT(*) FROM students WHERE major = '{major}'",
                "SELECT DISTINCT major FROM students ORDER BY major"),
    SqlTemplate("school_student_gpa", "school", "easy", "students",
                ("What is the GPA of the student {first_name} {last_name}?",
                 "Give the GPA of {first_name} {last_name}."),
                "SELECT gpa FROM students WHERE first_name = '{first_name}' AND last_name = '{last_name}'",
                "SELECT first_name, last_name FROM students ORDER BY student_id"),
    SqlTemplate("school_courses_dept_credits", "school", "easy", "courses",
                ("List the titles of {department} courses worth {credits} credits.",
                 "Which courses in the {department} department have {credits} credits? Give their titles."),
                "SELECT title FROM courses WHERE department = '{department}' AND credits = {credits}",
                "SELECT DISTINCT department, credits FROM courses ORDER BY department, credits"),
    SqlTemplate("school_teachers_hired_after", "school", "easy", "teachers",
                ("How many teachers were hired after {year}?",
                 "Count the teachers whose hire year is later than {year}."),
                "SELECT COUNT(*) FROM teachers WHERE hire_year > {year}",
                numbers={"year": (2000, 2003, 2005, 2008, 2010, 2012, 2015, 2018)}),
    SqlTemplate("school_top_gpa_in_major", "school", "medium", "students",
                ("Who are the {n} students with the highest GPA among {major} majors? Give their first and last "
                 "names, best first.",
                 "List the first and last names of the top {n} {major} students by GPA, ordered from the highest "
                 "GPA down."),
                "SELECT first_name, last_name FROM students WHERE major = '{major}' ORDER BY gpa DESC LIMIT {n}",
                "SELECT DISTINCT major FROM students ORDER BY major", {"n": _N},
                "SELECT gpa FROM students WHERE major = '{major}' ORDER BY gpa DESC"),
    SqlTemplate("school_avg_salary_by_dept", "school", "medium", "teachers",
                ("For each department, what is the average salary of teachers hired before {year}?",
                 "Give the average teacher salary per department, counting only teachers hired before {year}."),
                "SELECT department, AVG(salary) FROM teachers WHERE hire_year < {year} GROUP BY department",
                numbers={"year": (2005, 2008, 2010, 2012, 2014, 2016, 2018, 2020)}),
    SqlTemplate("school_students_in_course", "school", "hard", "enrollments",
                ("How many students are enrolled in the course '{title}'?",
                 "Count the students who take the course {title}."),
                "SELECT COUNT(*) FROM enrollments JOIN courses ON enrollments.course_id = courses.course_id "
                "WHERE courses.title = '{title}'",
                "SELECT title FROM courses ORDER BY course_id"),
    SqlTemplate("school_courses_of_teacher", "school", "hard", "courses",
                ("List the titles of the courses taught by {first_name} {last_name}.",
                 "Which courses does the teacher {first_name} {last_name} teach? Give the titles."),
                "SELECT courses.title FROM courses JOIN teachers ON courses.teacher_id = teachers.teacher_id "
                "WHERE teachers.first_name = '{first_name}' AND teachers.last_name = '{last_name}'",
                "SELECT first_name, last_name FROM teachers WHERE teacher_id IN (SELECT teacher_id FROM courses) "
                "ORDER BY teacher_id"),
    # ---------------------------------------------------------------- library
    SqlTemplate("library_genre_after_year", "library", "easy", "books",
                ("How many {genre} books were published after {year}?",
                 "Count the books in the {genre} genre published later than {year}."),
                "SELECT COUNT(*) FROM books WHERE genre = '{genre}' AND published_year > {year}",
                "SELECT DISTINCT genre FROM books ORDER BY genre", {"year": (1970, 1980, 1990, 2000, 2010)}),
    SqlTemplate("library_long_books", "library", "easy", "books",
                ("List the titles of {genre} books with more than {pages} pages.",
                 "Which {genre} books are longer than {pages} pages? Give their titles."),
                "SELECT title FROM books WHERE genre = '{genre}' AND pages > {pages}",
                "SELECT DISTINCT genre FROM books ORDER BY genre", {"pages": (400, 500, 600, 700, 800)}),
    SqlTemplate("library_members_in_city", "library", "easy", "members",
                ("How many members live in {city}?", "What is the number of library members from {city}?"),
                "SELECT COUNT(*) FROM members WHERE city = '{city}'",
                "SELECT DISTINCT city FROM members ORDER BY city"),
    SqlTemplate("library_members_plan_city", "library", "easy", "members",
                ("What are the names of the members with a {membership} membership who live in {city}?",
                 "List the names of {membership} members from {city}."),
                "SELECT name FROM members WHERE membership = '{membership}' AND city = '{city}'",
                "SELECT DISTINCT membership, city FROM members ORDER BY membership, city"),
    SqlTemplate("library_longest_in_genre", "library", "medium", "books",
                ("What are the titles of the {n} longest {genre} books, longest first?",
                 "List the {n} {genre} books with the most pages, in descending order of pages. Give the titles."),
                "SELECT title FROM books WHERE genre = '{genre}' ORDER BY pages DESC LIMIT {n}",
                "SELECT DISTINCT genre FROM books ORDER BY genre", {"n": _N},
                "SELECT pages FROM books WHERE genre = '{genre}' ORDER BY pages DESC"),
    SqlTemplate("library_genre_counts_before", "library", "medium", "books",
                ("For each genre, how many books were published before {year}?",
                 "Count the books published before {year} in each genre."),
                "SELECT genre, COUNT(*) FROM books WHERE published_year < {year} GROUP BY genre",
                numbers={"year": (1965, 1970, 1975, 1980, 1985, 1990, 1995, 2000)}),
    SqlTemplate("library_books_by_author", "library", "hard", "books",
                ("How many books by {name} does the library have?", "Count the books written by {name}."),
                "SELECT COUNT(*) FROM books JOIN authors ON books.author_id = authors.author_id "
                "WHERE authors.name = '{name}'",
                "SELECT name FROM authors WHERE author_id IN (SELECT author_id FROM books) ORDER BY author_id"),
    SqlTemplate("library_loans_of_book", "library", "hard", "loans",
                ("How many times has the book '{title}' been borrowed?",
                 "How many loans are there for the book {title}?"),
                "SELECT COUNT(*) FROM loans JOIN books ON loans.book_id = books.book_id WHERE books.title = '{title}'",
                "SELECT title FROM books WHERE book_id IN (SELECT book_id FROM loans) ORDER BY book_id"),
    # ---------------------------------------------------------------- flights
    SqlTemplate("flights_from_airport", "flights", "easy", "flights",
                ("How many flights depart from the airport {code}?", "Count the flights whose origin is {code}."),
                "SELECT COUNT(*) FROM flights WHERE origin = '{code}'",
                "SELECT DISTINCT origin AS code FROM flights ORDER BY origin"),
    SqlTemplate("flights_avg_price_airline", "flights", "easy", "flights",
                ("What is the average ticket price of {airline} flights?",
                 "On average, how much does a flight with {airline} cost?"),
                "SELECT AVG(price) FROM flights WHERE airline = '{airline}'",
                "SELECT DISTINCT airline FROM flights ORDER BY airline"),
    SqlTemplate("flights_long_from", "flights", "easy", "flights",
                ("List the flight numbers of flights from {code} that take longer than {minutes} minutes.",
                 "Which flights departing from {code} last more than {minutes} minutes? Give their flight numbers."),
                "SELECT flight_number FROM flights WHERE origin = '{code}' AND duration_minutes > {minutes}",
                "SELECT DISTINCT origin AS code FROM flights ORDER BY origin", {"minutes": (240, 360, 480, 600)}),
    SqlTemplate("flights_passengers_nationality", "flights", "easy", "passengers",
                ("How many passengers are {nationality}?", "Count the passengers whose nationality is {nationality}."),
                "SELECT COUNT(*) FROM passengers WHERE nationality = '{nationality}'",
                "SELECT DISTINCT nationality FROM passengers ORDER BY nationality"),
    SqlTemplate("flights_cheapest_from", "flights", "medium", "flights",
                ("What are the flight numbers of the {n} cheapest flights from {code}, cheapest first?",
                 "List the {n} lowest-priced flights departing from {code}, ordered by price from low to high. "
                 "Give the flight numbers."),
                "SELECT flight_number FROM flights WHERE origin = '{code}' ORDER BY price ASC LIMIT {n}",
                "SELECT DISTINCT origin AS code FROM flights ORDER BY origin", {"n": _N},
                "SELECT price FROM flights WHERE origin = '{code}' ORDER BY price ASC"),
    SqlTemplate("flights_bookings_by_class", "flights", "medium", "bookings",
                ("For each seat class, how many bookings were made in {month} 2024?",
                 "Count the bookings made during {month} 2024 per seat class."),
                "SELECT seat_class, COUNT(*) FROM bookings WHERE booking_date LIKE '2024-{mm}-%' GROUP BY seat_class",
                _MONTHS),
    SqlTemplate("flights_from_city", "flights", "hard", "flights",
                ("How many flights depart from airports in {city}?",
                 "Count the flights whose origin airport is located in {city}."),
                "SELECT COUNT(*) FROM flights JOIN airports ON flights.origin = airports.airport_code "
                "WHERE airports.city = '{city}'",
                "SELECT DISTINCT city FROM airports ORDER BY city"),
    SqlTemplate("flights_bookings_on_flight", "flights", "hard", "bookings",
                ("How many bookings were made for flight {flight_number}?",
                 "Count the bookings for the flight with number {flight_number}."),
                "SELECT COUNT(*) FROM bookings JOIN flights ON bookings.flight_id = flights.flight_id "
                "WHERE flights.flight_number = '{flight_number}'",
                "SELECT flight_number FROM flights WHERE flight_id IN (SELECT flight_id FROM bookings) "
                "ORDER BY flight_id"),
)
