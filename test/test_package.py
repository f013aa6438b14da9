"""Static checks of the ROS 2 package: manifest, setup.py, launch files, configs, CI plumbing.

Nothing here starts ROS: launch/launch_ros are not installable in this environment, so launch
files are parsed with ``ast`` and checked for the mistakes that only show up on a robot (an
undocumented or unused argument, an executable that setup.py does not install, a parameter
file that does not exist). setup.py is parsed, never executed.
"""
from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
CONFIG = REPO / "config"
LAUNCH_FILES = sorted((REPO / "launch").glob("*.py"))
CONFIG_FILES = sorted(CONFIG.glob("*.yaml"))
JTC_YAML = CONFIG / "ros2_control_jtc.yaml"

# Modules allowed to touch ROS (STYLE.md "ROS lives only in ..."); everything else is a core.
ROS_MODULE_PATTERNS = ("*_node.py", "ros_*.py", "cli.py")
FORBIDDEN_EXACT = {"rclpy", "launch", "launch_ros", "launch_testing", "launch_testing_ros"}
FORBIDDEN_SUFFIXES = ("_msgs", "_srvs", "_interfaces")  # message/service packages


# ----------------------------------------------------------------------------- helpers


def _call_name(node: ast.Call) -> str:
    """``Foo(...)`` and ``mod.Foo(...)`` both give ``'Foo'``."""
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return ""


def _kwarg(node: ast.Call, name: str) -> ast.expr | None:
    return next((kw.value for kw in node.keywords if kw.arg == name), None)


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _call_name(n) == name]


def _first_arg(node: ast.Call, keyword: str) -> ast.expr | None:
    return node.args[0] if node.args else _kwarg(node, keyword)


def _setup_kwargs() -> dict[str, ast.expr]:
    tree = ast.parse((REPO / "setup.py").read_text(), filename="setup.py")
    calls = _calls(tree, "setup")
    assert len(calls) == 1, f"setup.py should call setup() exactly once, found {len(calls)}"
    return {kw.arg: kw.value for kw in calls[0].keywords if kw.arg}


def _literal(kwargs: dict[str, ast.expr], name: str):
    assert name in kwargs, f"setup.py: setup() has no {name}="
    try:
        return ast.literal_eval(kwargs[name])
    except ValueError as exc:
        pytest.fail(f"setup.py: {name}= must be a literal so tools can read it statically: {exc}")


def _console_scripts() -> dict[str, str]:
    entry_points = _literal(_setup_kwargs(), "entry_points")
    scripts = {}
    for spec in entry_points.get("console_scripts", []):
        name, _, target = spec.partition("=")
        scripts[name.strip()] = target.strip()
    return scripts


def _has_ros_parameters(doc) -> bool:
    """True if some mapping in the YAML (any namespace depth) holds a ``ros__parameters`` dict."""
    if not isinstance(doc, dict):
        return False
    if isinstance(doc.get("ros__parameters"), dict):
        return True
    return any(_has_ros_parameters(v) for v in doc.values())


def _load_yaml(path: Path):
    with path.open() as f:
        return yaml.safe_load(f)


def _make_recipe(target: str) -> str:
    """The recipe lines (tab-indented) of ``target`` in the Makefile, joined."""
    lines = (REPO / "Makefile").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"^{re.escape(target)}\s*:", line):
            recipe = []
            for nxt in lines[i + 1:]:
                if not nxt.startswith("\t"):
                    break
                recipe.append(nxt)
            return "\n".join(recipe)
    pytest.fail(f"Makefile has no '{target}:' target")


# ----------------------------------------------------------------------------- package.xml


def test_package_xml_is_format3_ament_python_lam():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package", f"package.xml root is <{root.tag}>, expected <package>"
    assert root.get("format") == "3", f"package.xml format={root.get('format')!r}, expected '3'"
    assert root.findtext("name") == "lam", f"package.xml <name> is {root.findtext('name')!r}"
    build_type = root.findtext("export/build_type")
    assert build_type == "ament_python", f"<export><build_type> is {build_type!r}"
    for tag in ("version", "description", "maintainer", "license"):
        assert (root.findtext(tag) or "").strip(), f"package.xml <{tag}> is missing or empty"
    exec_depends = {e.text for e in root.findall("exec_depend")}
    for dep in ("rclpy", "launch", "launch_ros", "sensor_msgs", "trajectory_msgs"):
        assert dep in exec_depends, f"package.xml lacks <exec_depend>{dep}</exec_depend>"


def test_package_xml_version_matches_setup_py():
    xml_version = ET.parse(REPO / "package.xml").getroot().findtext("version")
    setup_version = _literal(_setup_kwargs(), "version")
    assert xml_version == setup_version, (
        f"package.xml version {xml_version!r} != setup.py version {setup_version!r}: bump both"
    )


# ----------------------------------------------------------------------------- setup.py


def test_setup_py_declares_packages_and_console_scripts():
    kwargs = _setup_kwargs()
    packages = set(_literal(kwargs, "packages"))
    assert {"lam_capture", "lam_policy", "lam_control"} <= packages, f"packages= is {packages}"
    assert _literal(kwargs, "package_dir") == {"": "src"}
    scripts = _console_scripts()
    for name in ("control_node", "lam"):
        assert name in scripts, f"setup.py console_scripts lacks {name!r}; has {sorted(scripts)}"


def test_setup_cfg_installs_scripts_where_ros2_run_looks():
    text = (REPO / "setup.cfg").read_text()
    assert re.search(r"^script_dir\s*=\s*\$base/lib/lam\s*$", text, re.M), text
    assert re.search(r"^install_scripts\s*=\s*\$base/lib/lam\s*$", text, re.M), text


# ----------------------------------------------------------------------------- launch files


def test_there_are_launch_files():
    assert LAUNCH_FILES, "launch/ holds no *.py launch file"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_arguments_are_described_and_used(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    declared = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        name_node = _first_arg(call, "name")
        assert isinstance(name_node, ast.Constant) and isinstance(name_node.value, str), (
            f"{path.name}:{call.lineno}: DeclareLaunchArgument name must be a string literal"
        )
        desc_node = _kwarg(call, "description")
        try:
            description = ast.literal_eval(desc_node) if desc_node is not None else None
        except ValueError:
            description = None
        assert isinstance(description, str) and description.strip(), (
            f"{path.name}:{call.lineno}: argument {name_node.value!r} needs a non-empty "
            "literal description="
        )
        declared[name_node.value] = call.lineno
    used = {
        arg.value
        for call in _calls(tree, "LaunchConfiguration")
        if isinstance(arg := _first_arg(call, "variable_name"), ast.Constant)
    }
    unused = sorted(set(declared) - used)
    assert not unused, f"{path.name}: declared but never read via LaunchConfiguration: {unused}"
    undeclared = sorted(used - set(declared))
    assert not undeclared, f"{path.name}: LaunchConfiguration of undeclared arguments: {undeclared}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_executables_are_console_scripts(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    scripts = _console_scripts()
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        exe = _kwarg(call, "executable")
        if exe is None:
            continue
        assert isinstance(exe, ast.Constant), f"{path.name}:{call.lineno}: executable= not a literal"
        package = _kwarg(call, "package")
        if isinstance(package, ast.Constant) and package.value != "lam":
            continue  # another package's executable (e.g. robot_state_publisher)
        assert exe.value in scripts, (
            f"{path.name}:{call.lineno}: executable {exe.value!r} is not a console script in "
            f"setup.py (have {sorted(scripts)})"
        )


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_parameter_files_exist_and_have_ros_parameters(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    literals = {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant)
        and isinstance(n.value, str)
        and re.fullmatch(r"[^\s]+\.ya?ml", n.value)
    }
    for literal in sorted(literals):
        target = CONFIG / Path(literal).name  # installed to share/lam/config from config/
        assert target.is_file(), f"{path.name} references {literal!r}, but {target} does not exist"
        doc = _load_yaml(target)
        assert _has_ros_parameters(doc), (
            f"{path.name} passes {literal!r} as parameters, but {target.name} has no "
            "'<node>: ros__parameters:' section"
        )


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_config_yaml_parses_with_ros_parameters(path: Path):
    doc = _load_yaml(path)
    assert isinstance(doc, dict) and doc, f"{path.name} is not a non-empty YAML mapping"
    assert _has_ros_parameters(doc), f"{path.name} has no '<node>: ros__parameters:' section"


def test_jtc_timeouts_and_tolerances():
    doc = _load_yaml(JTC_YAML)
    jtc = doc["joint_trajectory_controller"]["ros__parameters"]
    constraints = jtc["constraints"]
    cmd_timeout, goal_time = float(jtc["cmd_timeout"]), float(constraints["goal_time"])
    # JTC ignores cmd_timeout unless it exceeds goal_time; goal_time 0 waits forever.
    assert cmd_timeout > goal_time > 0, f"need cmd_timeout > goal_time > 0, got {cmd_timeout}, {goal_time}"
    assert float(constraints["stopped_velocity_tolerance"]) > 0
    assert jtc["command_interfaces"] == ["position"], jtc["command_interfaces"]
    assert jtc["state_interfaces"] == ["position", "velocity"], jtc["state_interfaces"]
    assert jtc["joints"], "joint_trajectory_controller has no joints"
    for joint in jtc["joints"]:
        tol = constraints.get(joint)
        assert isinstance(tol, dict), f"constraints.{joint} missing in {JTC_YAML.name}"
        for kind in ("trajectory", "goal"):
            assert float(tol.get(kind, 0.0)) > 0, (
                f"constraints.{joint}.{kind} = {tol.get(kind)!r}: 0 disables the check; set it > 0"
            )


def test_jtc_matches_control_node_config():
    """The controller must own every joint control_node commands, on the topic it streams to."""
    jtc_doc = _load_yaml(JTC_YAML)
    control = _load_yaml(CONFIG / "control.yaml")["control_node"]["ros__parameters"]
    commanded = list(control["joint_names"]) + list(control["gripper_joints"])
    jtc_joints = jtc_doc["joint_trajectory_controller"]["ros__parameters"]["joints"]
    assert sorted(jtc_joints) == sorted(commanded), (
        f"JTC joints {jtc_joints} != control_node joints {commanded}"
    )
    controllers = jtc_doc["controller_manager"]["ros__parameters"]
    controller = control["controller_topic"].strip("/").split("/")[0]
    assert controller in controllers, (
        f"control_node streams to {control['controller_topic']!r}, but controller_manager "
        f"declares no {controller!r}"
    )
    assert controllers[controller]["type"] == "joint_trajectory_controller/JointTrajectoryController"
    assert any(
        isinstance(v, dict) and v.get("type") == "joint_state_broadcaster/JointStateBroadcaster"
        for v in controllers.values()
    ), "no joint_state_broadcaster: nothing would publish /joint_states"


# ----------------------------------------------------------------------------- CI plumbing


def test_ci_run_is_executable_and_runs_make_test():
    ci = REPO / ".ci" / "run"
    assert ci.is_file(), ".ci/run is missing"
    assert os.access(ci, os.X_OK), ".ci/run is not executable (chmod +x .ci/run)"
    text = ci.read_text()
    assert "set -euo pipefail" in text
    assert re.search(r"^\s*make test\b", text, re.M), ".ci/run does not call `make test`"


def test_make_test_fails_when_no_tests_are_collected():
    recipe = _make_recipe("test")
    assert "pytest" in recipe and "no:cacheprovider" in recipe, recipe
    assert re.search(r"-eq 5|== ?5", recipe), f"`make test` does not special-case pytest exit 5:\n{recipe}"
    assert "exit 1" in recipe, f"`make test` must turn exit 5 into a failure:\n{recipe}"
    assert "|| true" not in recipe, f"`make test` swallows failures:\n{recipe}"


# ----------------------------------------------------------------------------- layering


def _is_ros_module(path: Path) -> bool:
    return any(path.match(pattern) for pattern in ROS_MODULE_PATTERNS)


def _forbidden(module: str) -> bool:
    top = module.split(".")[0]
    return top in FORBIDDEN_EXACT or top.endswith(FORBIDDEN_SUFFIXES)


def test_core_modules_do_not_import_ros():
    """STYLE.md: ROS lives only in *_node.py, ros_*.py, cli.py and launch/."""
    offences = []
    core_files = [
        p for p in sorted(SRC.rglob("*.py"))
        if not _is_ros_module(p) and ".egg-info" not in str(p)
    ]
    assert core_files, f"no core modules found under {SRC}"
    for path in core_files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                if _forbidden(module):
                    offences.append(f"{path.relative_to(REPO)}:{node.lineno}: imports {module}")
    assert not offences, (
        "core modules must not import ROS (move the code into a *_node.py or ros_*.py module):\n"
        + "\n".join(offences)
    )


@pytest.mark.parametrize(
    "module, bad",
    [("rclpy", True), ("rclpy.node", True), ("sensor_msgs.msg", True), ("std_srvs.srv", True),
     ("builtin_interfaces.msg", True), ("launch_ros.actions", True), ("launch", True),
     ("numpy", False), ("lam_control.safety", False), ("launcher", False)],
)
def test_forbidden_import_rule(module: str, bad: bool):
    assert _forbidden(module) is bad
