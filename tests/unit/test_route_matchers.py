"""Route matchers beside `path` (exact, regex, match, priority) and their selection
order, which is nginx's location order (routing.py): a table of nginx location cases,
compiled from porch.toml as a user writes it, and the config errors."""

from __future__ import annotations

import pytest

from porch.config.compile import compile_config
from porch.config.describe import describe
from porch.config.errors import ConfigError
from porch.config.toml import loads
from porch.routing import PathTable, glob_regex

UP = 'proxy = "http://127.0.0.1:9"\n'

# The nginx server these routes mirror (tests/integration/test_nginx_locations.py
# runs both side by side):
#   location /            { }    location = /exact    { }
#   location /static/     { }    location ^~ /assets/ { }
#   location ~ \.php$     { }    location ~* \.(jpg|png)$ { }
#   (match = "*.{css,js}" has no nginx form: nginx writes it ~ \.(css|js)$)
ROUTES = r"""
[[site]]
hosts = ["app.test"]
  [[site.route]]
  path = "/"
  proxy = "http://127.0.0.1:9"
  [[site.route]]
  exact = "/exact"
  proxy = "http://127.0.0.1:9"
  [[site.route]]
  path = "/static/"
  proxy = "http://127.0.0.1:9"
  [[site.route]]
  path = "/assets/"
  priority = "prefix"
  proxy = "http://127.0.0.1:9"
  [[site.route]]
  regex = '\.php$'
  proxy = "http://127.0.0.1:9"
  [[site.route]]
  regex = '\.(jpg|png)$'
  regex_case = false
  proxy = "http://127.0.0.1:9"
  [[site.route]]
  match = "*.{css,js}"
  proxy = "http://127.0.0.1:9"
  [[site.route]]
  regex = '^/static/.*\.css$'
  proxy = "http://127.0.0.1:9"
"""

# path -> the route nginx's order picks (its label: Route.path)
CASES = [
    ("/exact", "= /exact"),  # exact beats everything
    ("/exact/", "/"),  # not exact: the longest prefix
    ("/exact.php", "~ \\.php$"),  # a regex beats the prefix "/"
    ("/static/x", "/static/"),  # longest prefix, no regex matches
    ("/static/x.php", "~ \\.php$"),  # a regex beats a plain prefix
    ("/static/a.PNG", "~* \\.(jpg|png)$"),  # ~*: any case
    ("/static/a.css", "match *.{css,js}"),  # the first pattern in file order wins
    ("/assets/a.php", "/assets/"),  # ^~: the prefix wins over regexes
    ("/assets/a.png", "/assets/"),
    ("/assets", "/"),  # "/assets" is not under "/assets/"
    ("/a.PHP", "/"),  # ~ is case-sensitive
    ("/a.jpg", "~* \\.(jpg|png)$"),
    ("/a.js", "match *.{css,js}"),
    ("/a.jsx", "/"),  # a glob matches the whole path
    ("/", "/"),
]


def _site(text: str):
    runtime = compile_config(loads(text))
    return runtime.hosts.lookup("app.test")


@pytest.mark.parametrize("path,label", CASES)
def test_selection_follows_nginx_location_order(path, label):
    site = _site(ROUTES)
    route = site.paths.match(path.encode())
    assert route is not None and route.path == label


def test_without_a_prefix_route_a_pattern_or_nothing():
    site = _site('[[site]]\nhosts = ["app.test"]\n[[site.route]]\nregex = "^/api"\n' + UP)
    assert site.paths.match(b"/api/x").path == "~ ^/api"
    assert site.paths.match(b"/other") is None
    assert site.root_only is None


def test_exact_route_is_not_redirected_to_its_slash():
    text = ('[[site]]\nhosts = ["app.test"]\n[[site.route]]\npath = "/app/"\n' + UP
            + '[[site.route]]\nexact = "/app"\n' + UP)
    site = _site(text)
    assert not site.paths.needs_slash(b"/app")
    assert site.paths.match(b"/app").path == "= /app"


def test_prefix_only_tables_keep_the_plain_loop():
    table = PathTable.build({b"/": "root", b"/api/": "api"})
    assert not table.nginx
    assert table.match(b"/api/x") == "api" and table.match(b"/x") == "root"


def test_glob_forms():
    assert glob_regex("*.{css,js}") == r".*\.(?:css|js)\Z"
    assert glob_regex("/img/[!x]?.png") == r"/img/[^x].\.png\Z"


def test_describe_shows_the_matchers():
    text = describe(loads(ROUTES))
    for label in ("= /exact", "~* \\.(jpg|png)$", "match *.{css,js}", "priority prefix"):
        assert label in text


# --- errors: they name the key, the value and the fix -------------------------------

def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads(text)
    return info.value.problems


def route_problem(lines: str) -> str:
    (found,) = problems(f'[[site]]\nhosts = ["app.test"]\n{UP}[[site.route]]\n{lines}\n' + UP)
    return found


def test_bad_regex_names_key_value_and_the_re_error():
    found = route_problem("regex = '\\.(jpg|png$'")
    assert found.startswith('site[0].route[0].regex: "\\\\.(jpg|png$" is not a valid regular expression:')
    assert "missing )" in found and "fix the pattern" in found


@pytest.mark.parametrize("lines,expected", [
    ('path = "/a/"\nregex = "x"', "site[0].route[0].regex: a route matches by one of path, exact, regex"
                                  " and match, and this one has path too; split it into two routes"),
    ('exact = "/a"\nmatch = "*.css"', "site[0].route[0].match: a route matches by one of path, exact,"
                                      " regex and match, and this one has exact too; split it into two routes"),
    ('path = "/a/"\nregex_case = false', "site[0].route[0].regex_case: is for regex routes (false: nginx ~*);"
                                         " this route has path"),
    ('regex = "x"\npriority = "prefix"', 'site[0].route[0].priority: is for prefix routes (path = "/...",'
                                         " nginx ^~); this route has regex"),
    ('path = "/a/"\npriority = "regex"', 'site[0].route[0].priority: "regex" is not "prefix" (priority ='
                                         ' "prefix" makes a path route win over regex and match routes, as'
                                         " nginx's ^~; leave it out otherwise)"),
    ('match = ".css"', 'site[0].route[0].match: ".css" starts with neither / nor *, so no path matches it;'
                       ' write "*.css"'),
    ('match = "*.{css,js"', 'site[0].route[0].match: "*.{css,js" is not a valid glob: a { has no }'),
    ('exact = "50x.html"', 'site[0].route[0].exact: "50x.html" is not a path; write the exact path,'
                           ' like "/50x.html"'),
    ('regex = "x"\nstrip_prefix = true', 'site[0].route[0].strip_prefix: is for prefix routes'
                                         ' (path = "/..."); this route has regex, whose requests go upstream'
                                             ' with their path unchanged'),
])
def test_matcher_problems(lines, expected):
    assert route_problem(lines) == expected


def test_two_routes_with_the_same_regex():
    text = '[[site]]\nhosts = ["app.test"]\n' + ('[[site.route]]\nregex = "x"\n' + UP) * 2
    (found,) = problems(text)
    assert found.startswith('site[0].route[1].path: "~ x" is also site[0].route[0]')


def test_matcher_keys_belong_in_routes():
    (found,) = problems('[[site]]\nhosts = ["app.test"]\nregex = "x"\n' + UP)
    assert found == "site[0].regex: not a site key (write it in [[site.route]])"


# --- a site's strip_prefix = true and matcher routes: refused, not ignored ----------

STRIPPING_SITE = '[[site]]\nhosts = ["app.test"]\nstrip_prefix = true\n' + UP


@pytest.mark.parametrize("lines,label", [
    ('regex = "\\\\.php$"', "~ \\\\.php$"),
    ('regex = "x"\nregex_case = false', "~* x"),
    ('exact = "/page"', "= /page"),
    ('match = "*.png"', "match *.png"),
])
def test_site_strip_prefix_on_a_matcher_route_is_a_problem(lines, label):
    (found,) = problems(STRIPPING_SITE + f"[[site.route]]\n{lines}\n")
    assert found == (f'site[0].route[0]: "{label}" is not a prefix route, and the site has strip_prefix = true,'
                     " which needs a prefix to strip; write strip_prefix = false in this route (its path"
                     " goes upstream unchanged), or move strip_prefix = true from the site to its path routes")


def test_strip_prefix_false_on_a_matcher_route_opts_out_of_the_sites():
    text = STRIPPING_SITE + ('[[site.route]]\npath = "/api/"\n'
                             '[[site.route]]\nregex = "x"\nstrip_prefix = false\n')
    routes = {r.path: r for r in loads(text).sites[0].routes}
    assert routes["/api/"].strip_prefix and routes["/"].strip_prefix  # prefix routes inherit it
    assert not routes["~ x"].strip_prefix
