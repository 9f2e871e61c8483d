"""pipeline.py: hooks compiled per route, in the framework's order."""

import pytest

from porch import pipeline
from porch.pipeline import EMPTY, Chain, Policy, Reply, compile_chain


class Auth(Policy):
    name = "basic_auth"

    def request(self, ctx):
        return Reply(401)

    def log(self, ctx):
        return None


class Hsts(Policy):
    name = "hsts"

    def response(self, ctx, head):
        head.headers.add(b"Strict-Transport-Security", b"max-age=1")


class Headers_(Policy):
    name = "response_headers"

    def response(self, ctx, head):
        pass

    def upstream_request(self, ctx, head):
        pass


class Compress(Policy):
    name = "compress"

    def response(self, ctx, head):
        pass

    def response_body(self, ctx, data, end):
        return data


def test_only_overridden_hooks_are_in_a_phase():
    auth = Auth()
    chain = Chain([auth])
    assert chain.request == (auth.request,)
    assert chain.log == (auth.log,)
    assert chain.upstream_request == chain.response == chain.response_body == ()


def test_request_phases_in_order_response_phases_reversed_whatever_the_config_order():
    comp, hdrs, hsts, auth = Compress(), Headers_(), Hsts(), Auth()
    chain = Chain([comp, hdrs, auth, hsts])
    assert chain.names == ("hsts", "basic_auth", "response_headers", "compress")
    assert chain.request == (auth.request,)
    assert chain.upstream_request == (hdrs.upstream_request,)
    # reverse: compress sees the upstream's response first, HSTS is added last
    assert chain.response == (comp.response, hdrs.response, hsts.response)
    assert chain.owner(chain.response[0]) == "compress"


def test_no_policies_is_the_shared_empty_chain():
    assert compile_chain([]) is EMPTY
    assert not EMPTY and EMPTY.request == () and EMPTY.response == ()


def test_a_policy_outside_the_order_table_is_refused_at_load_time():
    class Stray(Policy):
        name = "stray"

    with pytest.raises(ValueError, match="not in pipeline.ORDER"):
        Chain([Stray()])


def test_order_names_are_unique():
    assert len(set(pipeline.ORDER)) == len(pipeline.ORDER)


class TraceOnly(Policy):
    name = "allow_trace"
    methods = frozenset({b"TRACE"})

    def request(self, ctx):
        return Reply(405)


def test_a_policy_limited_to_some_methods_is_in_their_chain_only():
    trace, auth, hdrs = TraceOnly(), Auth(), Headers_()
    chain = Chain([trace, hdrs, auth])
    assert chain.request == (auth.request,) and chain.methods == (b"TRACE",)
    assert chain.names == ("basic_auth", "allow_trace", "response_headers")  # every policy
    traced = chain.for_method(b"TRACE")
    assert traced.request == (auth.request, trace.request)  # in ORDER's place
    assert traced.methods is None and traced.for_method(b"TRACE") is traced
    # the other phases are the general chain's tuples, the very objects
    assert traced.upstream_request is chain.upstream_request and traced.log is chain.log
    for method in (b"GET", b"POST", b"TRACEX", b"trace", b""):
        assert chain.for_method(method) is chain


def test_without_method_limited_policies_for_method_is_the_chain_itself():
    chain = Chain([Auth()])
    assert chain.methods is None and chain.for_method(b"TRACE") is chain
    assert EMPTY.for_method(b"GET") is EMPTY


def test_a_policy_hands_its_chain_the_callable_that_runs_a_phase(tmp_path):
    # Policy.hook: compress and basic_auth give their compiled objects' methods (no call
    # through the policy a request); a failing hook is still logged under the policy's name.
    from types import SimpleNamespace

    from porch.policies import basic_auth, compress
    (tmp_path / "htpasswd").write_text("alice:{PLAIN}x\n")
    env = SimpleNamespace(shared={}, error_log=SimpleNamespace(error=lambda message: None))
    auth = basic_auth.build(basic_auth.parse({"htpasswd": str(tmp_path / "htpasswd")}), env)
    comp = compress.build(compress.parse(True))
    chain = Chain([comp, auth, Hsts()])
    assert chain.request == (auth.gate.request,)
    assert chain.response[0] == comp.plan.response and chain.response_body == (comp.plan.response_body,)
    assert [chain.owner(hook) for hook in chain.request + chain.response] == ["basic_auth", "compress", "hsts"]
    # a policy without its own hook() runs its methods, as before
    hsts = Hsts()
    assert hsts.hook("response") == hsts.response
