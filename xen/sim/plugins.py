"""`host.call_plugin`: the XCP-ng host plugins clients call, answering what the plugins of
xcp-ng-xapi-plugins (/etc/xapi.d/plugins) answer on an XCP-ng 8.3 host.

- `updater.py` `check_update`: `json.dumps` of the available packages, each
  `{name, version, release, description, changelog, url, size, license}` (xo-server's
  pool.listMissingPatches). Empty unless the lab lists `updates` for the host.
  `update` installs them (all, or the space-separated `packages` arg): the list empties and
  `other_config:rpm_patch_installation_time` is set, as XCP-ng's yum plugin does (xo-server
  then shows "reboot required"); it answers the plugin's `{exit, stdout, stderr, command}`.
- `raid.py` `check_raid_pool`: `{}`, what the plugin answers when `mdadm --detail
  /dev/md127` fails, i.e. no software RAID (xo-server's host.getMdadmHealth).

An unknown function of these plugins fails as XenAPIPlugin.dispatch does
(`UNKNOWN_XENAPI_PLUGIN_FUNCTION [fn]`); any other plugin is `XENAPI_MISSING_PLUGIN [plugin]`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from xen.sim.registry import CallContext, XapiFailure, message

UPDATER_REPOS = "xcp-ng-base,xcp-ng-updates"

PluginFn = Callable[[CallContext, str, dict[str, str]], str]


def _package(update: dict[str, Any]) -> dict[str, Any]:
    """One entry as updater.py's display_package builds it (every key present)."""
    return {
        "name": update["name"],
        "version": update["version"],
        "release": update["release"],
        "description": update.get("description", ""),
        "changelog": update.get("changelog"),
        "url": update.get("url", ""),
        "size": update.get("size", 0),
        "license": update.get("license", ""),
    }


def check_update(ctx: CallContext, host: str, args: dict[str, str]) -> str:
    del args
    return json.dumps([_package(u) for u in ctx.pool.updates.get(host, [])])


def update(ctx: CallContext, host: str, args: dict[str, str]) -> str:
    wanted = args.get("packages", "").split()
    pending = ctx.pool.updates.get(host, [])
    ctx.pool.updates[host] = [u for u in pending if wanted and u["name"] not in wanted]
    installed = [u["name"] for u in pending if not wanted or u["name"] in wanted]
    if installed:
        ctx.db.map_set("host", host, "other_config", "rpm_patch_installation_time",
                       f"{time.time():.3f}")  # fmt: skip
    command = ["yum", "update", '--disablerepo="*"', f"--enablerepo={UPDATER_REPOS}", "-y"]
    if args.get("packages"):
        command.append(args["packages"])
    stdout = "".join(f"Updated: {name}\n" for name in installed) + "Complete!\n"
    return json.dumps({"exit": 0, "stdout": stdout, "stderr": "", "command": command})


def check_raid_pool(ctx: CallContext, host: str, args: dict[str, str]) -> str:
    del ctx, host, args
    return json.dumps({})


PLUGINS: dict[str, dict[str, PluginFn]] = {
    "updater.py": {"check_update": check_update, "update": update},
    "raid.py": {"check_raid_pool": check_raid_pool},
}


@message("host.call_plugin")
def call_plugin(ctx: CallContext, host: str, plugin: str, fn: str, args: dict[str, str]) -> str:
    ctx.db.get("host", host)
    metrics = ctx.db.get("host", host)["metrics"]
    if ctx.db.exists("host_metrics", metrics) and not ctx.db.get("host_metrics", metrics)["live"]:
        raise XapiFailure("HOST_OFFLINE", host)
    functions = PLUGINS.get(plugin)
    if functions is None:
        raise XapiFailure("XENAPI_MISSING_PLUGIN", plugin)
    function = functions.get(fn)
    if function is None:
        raise XapiFailure("UNKNOWN_XENAPI_PLUGIN_FUNCTION", fn)
    return function(ctx, host, args)
