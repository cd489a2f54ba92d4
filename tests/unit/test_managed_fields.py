"""What the agent owns of a live object, read from its managedFields."""

from activities.managed_fields import owned_fields

LIVE = {
    "apiVersion": "dp.wso2.com/v1alpha2",
    "kind": "Backend",
    "metadata": {
        "name": "b",
        "namespace": "ns",
        "uid": "u-1",
        "labels": {"mine": "1", "theirs": "2"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        "managedFields": [
            {
                "manager": "gateway-agent",
                "operation": "Apply",
                "fieldsV1": {
                    "f:metadata": {"f:labels": {"f:mine": {}}},
                    "f:spec": {"f:services": {}, "f:protocol": {}},
                },
            },
            {
                "manager": "kubectl",
                "operation": "Update",
                "fieldsV1": {
                    "f:metadata": {"f:labels": {"f:theirs": {}}, "f:annotations": {".": {}}},
                    "f:spec": {"f:timeout": {}},
                },
            },
            {"manager": "gateway-agent", "operation": "Apply", "subresource": "status", "fieldsV1": {"f:status": {}}},
        ],
    },
    "spec": {"services": [{"host": "h", "port": 80}], "protocol": "http", "timeout": {"upstreamResponseTimeout": 5}},
    "status": {"x": 1},
}


def test_only_the_agents_applied_fields_and_the_identity_are_kept() -> None:
    assert owned_fields(LIVE, "gateway-agent") == {
        "apiVersion": "dp.wso2.com/v1alpha2",
        "kind": "Backend",
        "metadata": {"name": "b", "namespace": "ns", "labels": {"mine": "1"}},
        "spec": {"services": [{"host": "h", "port": 80}], "protocol": "http"},
    }


def test_an_object_the_agent_never_applied_is_identity_only() -> None:
    assert owned_fields(LIVE, "someone-else") == {
        "apiVersion": "dp.wso2.com/v1alpha2",
        "kind": "Backend",
        "metadata": {"name": "b", "namespace": "ns"},
    }


def test_keyed_and_set_list_entries_select_only_the_owned_items() -> None:
    live = {
        "apiVersion": "v1",
        "kind": "X",
        "metadata": {
            "name": "x",
            "managedFields": [
                {
                    "manager": "m",
                    "operation": "Apply",
                    "fieldsV1": {
                        "f:spec": {
                            "f:ports": {'k:{"port":80}': {".": {}, "f:port": {}, "f:name": {}}},
                            "f:finalizers": {'v:"a"': {}},
                        }
                    },
                }
            ],
        },
        "spec": {
            "ports": [{"port": 80, "name": "http", "extra": 1}, {"port": 443, "name": "https"}],
            "finalizers": ["a", "b"],
        },
    }
    assert owned_fields(live, "m")["spec"] == {"ports": [{"port": 80, "name": "http"}], "finalizers": ["a"]}
