"""The operator's diff-base storage builds the essence kopf's own would, from less of the body."""

from __future__ import annotations

import copy

import kopf
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy.diffbase import SlimAnnotationsDiffBaseStorage
from modeldeploy.gitops.kube import GROUP

KEY = "last-handled-configuration"
SLIM = SlimAnnotationsDiffBaseStorage(prefix=GROUP, key=KEY)
KOPFS = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key=KEY)

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=4)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)
objects = st.dictionaries(st.sampled_from(["model", "x", ""]), values, max_size=3)
# Annotations of this operator's storages, kubectl's, another kopf operator's, and plain ones.
annotation_keys = st.sampled_from(
    [
        f"{GROUP}/{KEY}",
        f"{GROUP}/kopf-managed",
        f"{GROUP}/on_change",
        "kubectl.kubernetes.io/last-applied-configuration",
        "kopf.zalando.org/last-handled-configuration",
        "other.example.com/kopf-managed",
        "other.example.com/x",
        "team",
    ]
)
bodies = st.fixed_dictionaries(
    {
        "apiVersion": st.just(f"{GROUP}/v1alpha1"),
        "kind": st.sampled_from(["ModelDeployment", "ReplicaSet"]),
        "metadata": st.fixed_dictionaries(
            {"name": st.just("m"), "namespace": st.just("ns"), "uid": st.text(max_size=8)},
            optional={
                "labels": st.dictionaries(st.text(max_size=4), st.text(max_size=4)),
                "annotations": st.dictionaries(annotation_keys, st.text(max_size=6)),
                "ownerReferences": st.lists(
                    st.fixed_dictionaries({"kind": st.sampled_from(["Deployment", "Job"])}),
                    max_size=2,
                ),
                "managedFields": st.lists(values, max_size=3),
                "finalizers": st.lists(st.text(max_size=4), max_size=2),
                "resourceVersion": st.text(max_size=4),
            },
        ),
    },
    # The API server's schema makes spec and status objects (kopf's own build needs them so).
    optional={"spec": objects, "status": objects, "data": values},
)
extra_fields = st.sampled_from([None, [], {("spec",)}, {"spec.model"}, {("status", "phase")}])


@settings(max_examples=300, deadline=None)
@given(body=bodies, extra=extra_fields)
def test_the_essence_is_kopfs(body: dict, extra: object) -> None:
    original = copy.deepcopy(body)
    slim = SLIM.build(body=kopf.Body(body), extra_fields=extra)
    assert slim == KOPFS.build(body=kopf.Body(body), extra_fields=extra)
    assert body == original  # nothing of the body was changed


def test_the_essence_shares_nothing_with_the_body() -> None:
    """kopf keeps an essence across events: later changes to the body must not reach it."""
    body = {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "labels": {"a": "1"}, "managedFields": [{"f": 1}]},
        "spec": {"model": {"uri": "s3://b/k"}, "stages": [{"name": "staging"}]},
        "status": {"phase": "Deployed"},
    }
    essence = SLIM.build(body=kopf.Body(body), extra_fields={("spec",)})
    body["spec"]["model"]["uri"] = "s3://b/other"
    body["spec"]["stages"].append({"name": "prod"})
    body["metadata"]["labels"]["a"] = "2"
    assert essence == {
        "spec": {"model": {"uri": "s3://b/k"}, "stages": [{"name": "staging"}]},
        "metadata": {"labels": {"a": "1"}},
    }
