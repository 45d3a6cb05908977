"""Pennsieve's ``interactive``/``sessionType`` processor fields: kept, typed and checked (a notebook
session is one server its user stops, so nothing but a data target waits on it), and refused by the
state-machine compiler by name."""

from __future__ import annotations

import pytest

from pennflow.workflow.asl import CompileError, compile_workflow
from pennflow.workflow.definition import DefinitionError, SessionType, validate_definition


def _workflow(*processors: dict) -> dict:
    return {"name": "nb", "processors": [{"id": "data", "type": "data-source"}, *processors]}


def _faults(data: dict) -> list[str]:
    with pytest.raises(DefinitionError) as refused:
        validate_definition(data)
    return [str(fault) for fault in refused.value.faults]


SESSION = {"id": "notebook", "interactive": True, "sessionType": "jupyter", "dependsOn": ["data"]}


def test_the_model_keeps_both_fields_and_pennsieves_default_kind() -> None:
    workflow = validate_definition(_workflow(SESSION))
    notebook = workflow.processor("notebook")
    assert (notebook.interactive, notebook.session_type) == (True, SessionType.JUPYTER)
    bare = validate_definition(_workflow({"id": "notebook", "interactive": True, "dependsOn": ["data"]}))
    assert bare.processor("notebook").session_kind is SessionType.JUPYTER  # Pennsieve's launcher default
    plain = validate_definition(_workflow({"id": "p", "image": "i"}))
    assert plain.processor("p").session_kind is None
    # at their defaults the fields are not dumped: every workflow without a session keeps its hash
    assert "interactive" not in plain.canonical_json() and "sessionType" not in plain.canonical_json()
    assert '"interactive":true' in workflow.canonical_json()  # part of the definition, and of its hash


def test_a_session_type_alone_or_in_runtime_config_makes_the_processor_interactive() -> None:
    alone = validate_definition(_workflow({"id": "nb", "sessionType": "python", "dependsOn": ["data"]}))
    assert alone.processor("nb").interactive
    assert "interactive: implied by sessionType (nb)" in alone.notes
    api = validate_definition(
        _workflow(
            {
                "id": "nb",
                "runtimeConfig": {"interactive": True, "sessionType": "jupyter"},
                "dependsOn": ["data"],
            }
        )
    )
    assert api.processor("nb").session_type is SessionType.JUPYTER


def test_unknown_and_unsupported_session_types_are_refused_precisely() -> None:
    unknown = _faults(_workflow({**SESSION, "sessionType": "vscode"}))
    assert unknown == [
        "processor 'notebook', field 'sessionType': 'vscode' is not one of 'jupyter', 'python' or 'r'"
    ]
    r = _faults(_workflow({**SESSION, "sessionType": "r"}))
    assert r == [
        "processor 'notebook', field 'sessionType': 'r' sessions are not supported: a pennflow session is a "
        "Jupyter server with a Python kernel (sessionType 'jupyter')"
    ]
    contradiction = _faults(_workflow({**SESSION, "interactive": False, "image": "i"}))
    assert contradiction == [
        "processor 'notebook', field 'sessionType': set on a processor that is not interactive: "
        "set interactive: true or remove it"
    ]


def test_a_session_with_a_dependant_processor_is_refused_saying_why() -> None:
    faults = _faults(_workflow(SESSION, {"id": "after", "image": "i", "dependsOn": ["notebook"]}))
    assert faults == [
        "processor 'after', field 'dependsOn': 'notebook' is interactive (a notebook session): it has no "
        "output until the user stops it, so no processor can wait on it; only a data target may depend on "
        "it (it publishes the session's working area)"
    ]
    target = {"id": "out", "type": "data-target", "targetType": "s3", "dependsOn": ["notebook"]}
    assert validate_definition(_workflow(SESSION, target)).processor("out").dependencies == ("notebook",)


def test_a_scattered_retried_or_commanded_session_and_two_sessions_are_refused() -> None:
    faults = _faults(
        _workflow({**SESSION, "scatter": {"batchSize": 2}, "retry": {"maxAttempts": 1}, "command": ["x"]})
    )
    assert faults == [
        "processor 'notebook', field 'scatter': an interactive processor is one notebook session: it cannot scatter",
        "processor 'notebook', field 'command': an interactive processor runs pennflow's notebook server: "
        "it takes no command",
        "processor 'notebook', field 'retry': a notebook session is not retried: remove retry",
    ]
    two = _faults(_workflow(SESSION, {**SESSION, "id": "second"}))
    assert two == [
        "processor 'second', field 'interactive': a run is at most one notebook session, and 'notebook', "
        "'second' are interactive"
    ]
    source = _faults(
        {"name": "nb", "processors": [{"id": "data", "type": "data-source", "interactive": True}]}
    )
    assert source == [
        "processor 'data', field 'interactive': a data-source cannot be interactive: only a processor can"
    ]


def test_the_compiler_refuses_a_session_naming_the_node_setting() -> None:
    workflow = validate_definition(_workflow(SESSION))
    with pytest.raises(CompileError) as refused:
        compile_workflow(workflow)
    assert str(refused.value) == (
        "processor 'notebook' is interactive (a notebook session), which a state machine does not run: on a "
        "compute node a session is a notebook task, started when the node's `interactive` setting is on; "
        "run this workflow with `pennflow run` on this machine"
    )
