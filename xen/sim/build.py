"""Populate a pool's `Database` from its lab `PoolSpec`: every object a real pool would show.

Records start from the datamodel defaults (db.py) and get the values a client looks at
(xapi.md 2.2). `vm_allowed_operations` / `refresh_host_memory` are also used by behaviours
that change VM state (migration) to keep derived fields consistent.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from xen.sim import cpuid, secureboot
from xen.sim.consoles import open_consoles
from xen.sim.db import NULL_REF, Database, now
from xen.sim.lab import GIB, MIB, CpuSpec, HostSpec, Lab, NetworkSpec, PoolSpec, VmSpec

HOST_ALLOWED_OPS = [
    "provision",
    "evacuate",
    "shutdown",
    "reboot",
    "vm_start",
    "vm_resume",
    "vm_migrate",
]
SR_OPS = [
    "scan", "destroy", "forget", "plug", "unplug", "update", "vdi_create", "vdi_introduce",
    "vdi_destroy", "vdi_resize", "vdi_clone", "vdi_snapshot", "vdi_mirror", "vdi_enable_cbt",
    "vdi_disable_cbt", "vdi_data_destroy", "vdi_list_changed_blocks", "vdi_set_on_boot",
    "pbd_create", "pbd_destroy",
]  # fmt: skip
VDI_OPS = ["clone", "copy", "resize", "snapshot", "mirror", "destroy", "forget", "update",
           "generate_config", "enable_cbt", "disable_cbt", "data_destroy", "list_changed_blocks",
           "set_on_boot"]  # fmt: skip
ISO_VDI_OPS = ["forget", "update", "generate_config"]
SM_CAPS_DISK = ["SR_PROBE", "SR_UPDATE", "VDI_CREATE", "VDI_DELETE", "VDI_ATTACH", "VDI_DETACH",
                "VDI_UPDATE", "VDI_CLONE", "VDI_SNAPSHOT", "VDI_RESIZE", "VDI_MIRROR",
                "VDI_GENERATE_CONFIG", "VDI_RESET_ON_BOOT/2", "VDI_CONFIG_CBT", "VDI_ACTIVATE",
                "VDI_DEACTIVATE", "THIN_PROVISIONING", "VDI_READ_CACHING"]  # fmt: skip
SM_CAPS_ISO = ["VDI_CREATE", "VDI_DELETE", "VDI_ATTACH", "VDI_DETACH", "SR_SCAN", "SR_PROBE"]

VM_RUNNING_OPS = ["snapshot", "clone", "copy", "checkpoint", "pause", "clean_shutdown",
                  "clean_reboot", "hard_shutdown", "hard_reboot", "suspend", "pool_migrate",
                  "migrate_send", "changing_dynamic_range", "changing_memory_live",
                  "changing_VCPUs_live", "send_sysrq", "send_trigger", "call_plugin",
                  "metadata_export", "snapshot_with_quiesce"]  # fmt: skip
VM_HALTED_OPS = ["snapshot", "clone", "copy", "start", "start_on", "migrate_send", "export",
                 "metadata_export", "destroy", "changing_dynamic_range", "changing_static_range",
                 "changing_memory_limits", "changing_VCPUs", "changing_NVRAM",
                 "make_into_template", "create_vtpm"]  # fmt: skip
VM_TEMPLATE_OPS = ["clone", "copy", "export", "metadata_export", "destroy", "provision",
                   "changing_memory_limits", "changing_VCPUs", "changing_static_range"]  # fmt: skip
VM_SNAPSHOT_OPS = ["revert", "clone", "copy", "export", "metadata_export", "destroy",
                   "create_template"]  # fmt: skip


def vm_allowed_operations(rec: dict[str, Any]) -> list[str]:
    """What XAPI's allowed_operations would say for a VM record (blocked ops excluded)."""
    if rec["is_control_domain"]:
        ops: list[str] = ["changing_dynamic_range"]
    elif rec["is_a_snapshot"]:
        ops = list(VM_SNAPSHOT_OPS)
    elif rec["is_a_template"]:
        ops = list(VM_TEMPLATE_OPS)
    elif rec["power_state"] == "Running":
        ops = list(VM_RUNNING_OPS)
    elif rec["power_state"] == "Halted":
        ops = list(VM_HALTED_OPS)
    elif rec["power_state"] == "Suspended":
        ops = ["resume", "resume_on", "hard_shutdown", "migrate_send", "snapshot", "clone", "copy"]
    else:  # Paused
        ops = ["unpause", "hard_shutdown", "hard_reboot", "snapshot"]
    if rec["current_operations"]:
        return []  # XAPI allows nothing else while an operation is in progress
    blocked = rec["blocked_operations"]
    return [op for op in ops if op not in blocked]


def refresh_host_memory(db: Database, host_ref: str) -> None:
    """host_metrics.memory_free = total - overheads - resident VMs' memory."""
    host = db.get("host", host_ref)
    metrics = host["metrics"]
    if not db.exists("host_metrics", metrics):
        return
    used = host["memory_overhead"]
    for vm in host["resident_VMs"]:
        if db.exists("VM", vm):
            rec = db.get("VM", vm)
            used += rec["memory_target"] + rec["memory_overhead"]
    total = db.get("host_metrics", metrics)["memory_total"]
    db.update("host_metrics", metrics, memory_free=max(0, total - used), last_updated=now())


# XCP-ng's licence daemon grants everything and never expires; XAPI's licensing code takes
# "never" to be 2030-01-01 (v6d: "define never as 01-01-2030").
LICENSE_EXPIRY = "20300101T00:00:00Z"
HOST_UPTIME_S = 7 * 86400  # hosts of a fresh lab booted a week ago ...
AGENT_START_DELAY_S = 90  # ... and their toolstack started this long after boot

# PIF_metrics of the lab's NICs (what lspci names on a real host), by link speed.
NICS = {
    10000: ("8086", "Intel Corporation", "1572", "Ethernet Controller X710 for 10GbE SFP+"),
    1000: ("8086", "Intel Corporation", "1521", "I350 Gigabit Network Connection"),
}


def _mac(*parts: str) -> str:
    digest = hashlib.sha1("/".join(parts).encode()).digest()
    return "aa:" + ":".join(f"{b:02x}" for b in digest[:5])


CPU_FLAGS = "fpu de tsc msr pae mce cx8 apic sep mca cmov pat clflush mmx fxsr sse sse2"


def cpu_info(cpu: CpuSpec, count: int) -> dict[str, str]:
    return {
        "cpu_count": str(count),
        "socket_count": "2",
        "vendor": cpu.vendor,
        "speed": cpu.speed_mhz,
        "modelname": cpu.model_name,
        "family": cpu.family,
        "model": cpu.model,
        "stepping": "8",
        "flags": CPU_FLAGS,
        "features": cpu.features,
        "features_pv": cpu.features,
        "features_hvm": cpu.features,
        "features_pv_host": cpu.features,
        "features_hvm_host": cpu.features,
    }


class PoolBuilder:
    def __init__(self, lab: Lab, spec: PoolSpec, db: Database | None = None) -> None:
        self.lab = lab
        self.spec = spec
        self.db = db or Database()
        self.hosts: dict[str, str] = {}
        self.srs: dict[str, str] = {}
        self.networks: dict[str, str] = {}
        self.iso_vdis: dict[str, str] = {}
        self.vms: dict[str, str] = {}
        self._domid = 0
        self._booted = int(time.time()) - HOST_UPTIME_S
        self._pool_cpu: dict[str, str] = {}

    def build(self) -> Database:
        db = self.db
        for h in self.spec.hosts:
            self._host(h.name)
        master = self.hosts[self.spec.master.name]
        self._pool_cpu = cpuid.pool_cpu_info(
            db.get("host", h)["cpu_info"] for h in self.hosts.values()
        )
        for sr in self.spec.srs:
            self._sr(sr.name)
        for net in self.spec.networks:
            self._network(net.name)
        self.pool_ref = db.create(
            "pool",
            name_label=self.spec.name,
            master=master,
            default_SR=self.srs.get(self.spec.default_sr, NULL_REF),
            suspend_image_SR=self.srs.get(self.spec.default_sr, NULL_REF),
            crash_dump_SR=self.srs.get(self.spec.default_sr, NULL_REF),
            other_config=dict(self.spec.other_config),
            cpu_info=dict(self._pool_cpu),
            restrictions={"restrict_xen_motion": "false", "restrict_storage_xen_motion": "false"},
            migration_compression=False,
            tls_verification_enabled=True,
        )
        for vm in self.spec.vms:
            self._vm(vm)
        for ref in self.hosts.values():
            refresh_host_memory(db, ref)
        return db

    # -- hosts ------------------------------------------------------------------------

    def _host(self, name: str) -> None:
        db = self.db
        h = next(x for x in self.spec.hosts if x.name == name)
        index = self.spec.hosts.index(h)
        cpu = self.lab.cpus[h.cpu]
        total = int(h.memory_gib * GIB)
        uuid = db.ids.uuid()
        iqn = f"iqn.2024-01.com.example:{uuid[:8]}"  # XAPI's first-boot default shape
        booted = self._booted + index * 60
        metrics = db.create(
            "host_metrics", memory_total=total, memory_free=total, live=h.live, last_updated=now()
        )
        ref = db.create(
            "host",
            uuid=uuid,
            name_label=h.name,
            name_description=f"Simulated host {h.name}",
            hostname=h.name,
            address=h.address,
            enabled=h.enabled,
            metrics=metrics,
            memory_overhead=int(h.dom0_memory_gib * GIB) // 8,
            API_version_major=2,
            API_version_minor=h.api_version_minor,
            API_version_vendor="XenSource",
            software_version={
                "product_brand": "XCP-ng",
                "product_version": h.product_version,
                "platform_name": "XCP",
                "platform_version": h.platform_version,
                "xapi": "25.6",
                "xen": "4.17.5",
                "hostname": h.name,
                "build_number": "sim",
            },
            cpu_info=cpu_info(cpu, h.cpu_count),
            capabilities=["xen-3.0-x86_64", "hvm-3.0-x86_64"],
            allowed_operations=list(HOST_ALLOWED_OPS),
            edition="xcp-ng",
            sched_policy="credit",
            license_params={"sku_type": "free", "expiry": LICENSE_EXPIRY},
            iscsi_iqn=iqn,
            # Times as XAPI writes them (OCaml string_of_float: "1700000000.").
            other_config={
                "agent_start_time": f"{booted + AGENT_START_DELAY_S}.",
                "boot_time": f"{booted}.",
                "iscsi_iqn": iqn,
            },
        )
        self.hosts[name] = ref
        self._host_cpus(ref, h, cpu)
        dom0_mem = int(h.dom0_memory_gib * GIB)
        dom0 = db.create(
            "VM",
            name_label=f"Control domain on host: {h.name}",
            is_control_domain=True,
            power_state="Running",
            resident_on=ref,
            affinity=ref,
            domid=0,
            memory_static_max=dom0_mem,
            memory_dynamic_max=dom0_mem,
            memory_dynamic_min=dom0_mem,
            memory_static_min=dom0_mem,
            memory_target=dom0_mem,
            VCPUs_max=8,
            VCPUs_at_startup=8,
            domain_type="pv",
        )
        self._finish_vm(dom0)
        open_consoles(db, dom0, h.address, control_domain=True)
        db.update("host", ref, control_domain=dom0)

    def _host_cpus(self, host: str, h: HostSpec, cpu: CpuSpec) -> None:
        """One host_cpu record per logical CPU, as xapi makes at start (create_host_cpu)."""
        for number in range(h.cpu_count):
            self.db.create(
                "host_cpu",
                host=host,
                number=number,
                vendor=cpu.vendor,
                speed=int(float(cpu.speed_mhz)),
                modelname=cpu.model_name,
                family=int(cpu.family),
                model=int(cpu.model),
                stepping="8",
                flags=CPU_FLAGS,
                features="",
                utilisation=0.0,
            )

    # -- storage ----------------------------------------------------------------------

    def _sr(self, name: str) -> None:
        db = self.db
        s = next(x for x in self.spec.srs if x.name == name)
        iso = s.content_type == "iso"
        if not db.find("SM", type=s.type):
            caps = SM_CAPS_ISO if iso else SM_CAPS_DISK
            if not s.mirror:
                caps = [c for c in caps if c != "VDI_MIRROR"]
            db.create(
                "SM",
                name_label=s.type,
                type=s.type,
                vendor="Simulated",
                version="1.0",
                required_api_version="1.0",
                capabilities=list(caps),
                features={c.split("/")[0]: 1 for c in caps},
                configuration={},
            )
        size = int(s.size_gib * GIB)
        ref = db.create(
            "SR",
            name_label=s.name,
            name_description=f"{s.type} SR",
            type=s.type,
            content_type=s.content_type,
            shared=s.shared,
            physical_size=size,
            allowed_operations=["scan", "forget", "vdi_create", "vdi_destroy"]
            if iso
            else [op for op in SR_OPS if s.mirror or op != "vdi_mirror"],
            sm_config={"allocation": "thin"} if not iso else {},
            other_config={"i18n-key": "local-storage"} if not s.shared else {},
        )
        self.srs[name] = ref
        targets = [h.name for h in self.spec.hosts] if s.shared else [s.host]
        for hname in targets:
            db.create(
                "PBD",
                host=self.hosts[hname],
                SR=ref,
                currently_attached=True,
                device_config={"location": f"/sim/{s.type}/{s.name}"},
            )
        for iso_name in s.isos:
            self.iso_vdis[iso_name] = self._vdi(
                iso_name, ref, 512 * MIB, 512 * MIB, type="user", read_only=True, iso=True
            )

    def _vdi(
        self,
        name: str,
        sr: str,
        virtual: int,
        used: int,
        *,
        type: str = "user",
        read_only: bool = False,
        iso: bool = False,
        cbt: bool = False,
        snapshot_of: str = NULL_REF,
    ) -> str:
        db = self.db
        uuid = db.ids.uuid()
        ref = db.create(
            "VDI",
            uuid=uuid,
            name_label=name,
            SR=sr,
            virtual_size=virtual,
            physical_utilisation=used,
            type=type,
            read_only=read_only,
            location=f"{name}.iso" if iso else uuid,
            managed=True,
            on_boot="persist",
            cbt_enabled=cbt,
            is_a_snapshot=snapshot_of != NULL_REF,
            snapshot_of=snapshot_of,
            snapshot_time=now()
            if snapshot_of != NULL_REF
            else db.schema.cls("VDI").fields["snapshot_time"].default,
            allowed_operations=list(ISO_VDI_OPS if iso else VDI_OPS),
            storage_lock=False,
            sm_config={"vdi_type": "vhd"} if not iso else {},
        )
        rec = db.get("SR", sr)
        db.update(
            "SR",
            sr,
            physical_utilisation=rec["physical_utilisation"] + used,
            virtual_allocation=rec["virtual_allocation"] + virtual,
        )
        return ref

    # -- networks ---------------------------------------------------------------------

    def _network(self, name: str) -> None:
        db = self.db
        n = next(x for x in self.spec.networks if x.name == name)
        idx = self.spec.networks.index(n)
        ref = db.create(
            "network",
            name_label=n.name,
            name_description="management network" if n.management else "",
            bridge=n.bridge or f"xenbr{idx}",
            MTU=n.mtu,
            managed=True,
            other_config={"automatic": "true" if n.management else "false"},
        )
        self.networks[name] = ref
        for h in self.spec.hosts:
            ip = h.address if n.management else n.ips.get(h.name, "")
            db.create(
                "PIF",
                metrics=self._pif_metrics(n, idx),
                host=self.hosts[h.name],
                network=ref,
                device=n.device or f"eth{idx}",
                MAC=_mac(self.spec.name, h.name, n.name),
                MTU=n.mtu,
                VLAN=-1,
                physical=True,
                currently_attached=True,
                managed=True,
                management=n.management,
                IP=ip,
                netmask="255.0.0.0" if ip else "",
                gateway="",
                ip_configuration_mode="Static" if ip else "None",
                primary_address_type="IPv4",
                DNS="",
            )

    def _pif_metrics(self, n: NetworkSpec, idx: int) -> str:
        """The NIC behind a physical PIF: link up, full duplex, its speed and PCI names."""
        vendor_id, vendor, device_id, device = NICS.get(n.speed_mbit, NICS[10000])
        return self.db.create(
            "PIF_metrics",
            carrier=True,
            speed=n.speed_mbit,
            duplex=True,
            vendor_id=vendor_id,
            vendor_name=vendor,
            device_id=device_id,
            device_name=device,
            pci_bus_path=f"0000:{idx + 1:02x}:00.0",
            last_updated=now(),
        )

    # -- VMs --------------------------------------------------------------------------

    def _vm(self, v: VmSpec) -> None:
        db = self.db
        running = v.power_state == "Running"
        host = self.hosts.get(v.host, NULL_REF)
        mem = int(v.memory_gib * GIB)
        mem_min = int((v.memory_min_gib if v.memory_min_gib is not None else v.memory_gib) * GIB)
        # Booted in this pool: its levelled features; `boot_cpu`: booted with that profile's.
        booted_with = cpu_info(self.lab.cpus[v.boot_cpu], 0) if v.boot_cpu else self._pool_cpu
        if running:
            self._domid += 1
        ref = db.create(
            "VM",
            name_label=v.name,
            name_description=v.description,
            power_state=v.power_state,
            is_a_template=v.template,
            resident_on=host if running else NULL_REF,
            affinity=host,
            domid=self._domid if running else -1,
            memory_static_max=mem,
            memory_dynamic_max=mem,
            memory_dynamic_min=mem_min,
            memory_static_min=min(mem_min, 512 * MIB),
            memory_target=mem if running else 0,
            memory_overhead=mem // 128 + 8 * MIB,
            VCPUs_max=v.vcpus,
            VCPUs_at_startup=v.vcpus,
            domain_type="hvm",
            HVM_boot_policy="BIOS order",
            HVM_boot_params={
                "order": "cd",
                **({"firmware": "uefi"} if v.firmware == "uefi" else {}),
            },
            platform={
                "timeoffset": "0",
                "device-model": "qemu-upstream-compat",
                **({"secureboot": "true"} if v.secure_boot else {}),
                **v.platform,
            },
            NVRAM={secureboot.NVRAM_KEY: secureboot.efi_variables_blob(v.efi_vars)}
            if v.efi_vars
            else {},
            blocked_operations=dict(v.blocked_operations),
            other_config={"base_template_name": "Debian Bookworm 12", **v.other_config},
            last_boot_CPU_flags=cpuid.boot_flags(booted_with, "hvm") if running else {},
            user_version=1,
            ha_restart_priority="",
            actions_after_shutdown="destroy",
            actions_after_reboot="restart",
            actions_after_crash="restart",
            hardware_platform_version=2,
            has_vendor_device=False,
        )
        self.vms[v.name] = ref
        disks: list[tuple[str, str]] = []  # (VDI ref, device)
        for i, d in enumerate(v.disks):
            virtual = int(d.size_gib * GIB)
            used = int((d.used_gib if d.used_gib is not None else d.size_gib) * GIB)
            vdi = self._vdi(
                d.name or f"{v.name} disk {i}", self.srs[d.sr], virtual, used, cbt=d.cbt
            )
            self._vbd(ref, vdi, str(i), f"xvd{chr(ord('a') + i)}", running, bootable=i == 0,
                      mode=d.mode)  # fmt: skip
            disks.append((vdi, str(i)))
        if v.cd is not None:
            vdi = self.iso_vdis.get(v.cd, NULL_REF) if v.cd else NULL_REF
            self._vbd(ref, vdi, "3", "xvdd", running, cd=True)
        networks = v.networks or [next(n.name for n in self.spec.networks if n.management)]
        macs = []
        for i, net in enumerate(networks):
            mac = _mac(self.spec.name, v.name, str(i))
            macs.append(mac)
            self._vif(ref, self.networks[net], str(i), mac, running)
        self._finish_vm(ref, pv_drivers=v.pv_drivers if v.pv_drivers is not None else running,
                        os=v.os)  # fmt: skip
        if running:
            open_consoles(db, ref, next(h.address for h in self.spec.hosts if h.name == v.host))
        for s_name in v.snapshots:
            self._snapshot(ref, v, s_name, disks, networks, macs)

    def _vbd(
        self,
        vm: str,
        vdi: str,
        userdevice: str,
        device: str,
        attached: bool,
        *,
        bootable: bool = False,
        cd: bool = False,
        mode: str = "RW",
    ) -> str:
        return self.db.create(
            "VBD",
            VM=vm,
            VDI=vdi,
            userdevice=userdevice,
            device=device if attached else "",
            bootable=bootable,
            mode="RO" if cd else mode,
            type="CD" if cd else "Disk",
            empty=vdi == NULL_REF,
            unpluggable=True,
            currently_attached=attached,
            allowed_operations=(["eject"] if vdi != NULL_REF else ["insert"]) if cd else ["attach"],
            other_config={"owner": ""} if not cd else {},
        )

    def _vif(self, vm: str, network: str, device: str, mac: str, attached: bool) -> str:
        return self.db.create(
            "VIF",
            VM=vm,
            network=network,
            device=device,
            MAC=mac,
            MTU=1500,
            currently_attached=attached,
            allowed_operations=["unplug"] if attached else ["attach"],
            locking_mode="network_default",
        )

    def _finish_vm(self, ref: str, *, pv_drivers: bool = False, os: str = "") -> None:
        """VM_metrics, guest metrics (PV drivers) and allowed_operations."""
        db = self.db
        rec = db.get("VM", ref)
        running = rec["power_state"] == "Running"
        metrics = db.create(
            "VM_metrics",
            memory_actual=rec["memory_target"],
            VCPUs_number=rec["VCPUs_at_startup"] if running else 0,
            state=[],
            start_time=now()
            if running
            else db.schema.cls("VM_metrics").fields["start_time"].default,
            install_time=now(),
            last_updated=now(),
            hvm=rec["domain_type"] == "hvm",
            current_domain_type=rec["domain_type"] if running else "unspecified",
        )
        values: dict[str, Any] = {"metrics": metrics}
        if pv_drivers:
            values["guest_metrics"] = db.create(
                "VM_guest_metrics",
                os_version={"name": os, "distro": "debian", "major": "12", "uname": "6.1.0"},
                PV_drivers_version={"major": "8", "minor": "3", "micro": "0", "build": "1"},
                PV_drivers_up_to_date=True,
                PV_drivers_detected=True,
                networks={"0/ip": "10.0.0.1"},
                other={"feature-suspend": "1", "feature-balloon": "1"},
                live=True,
                can_use_hotplug_vbd="yes",
                can_use_hotplug_vif="yes",
                last_updated=now(),
            )
        db.update("VM", ref, **values)
        db.update("VM", ref, allowed_operations=vm_allowed_operations(db.get("VM", ref)))

    def _snapshot(
        self,
        vm: str,
        v: VmSpec,
        label: str,
        disks: list[tuple[str, str]],
        networks: list[str],
        macs: list[str],
    ) -> None:
        db = self.db
        src = db.get("VM", vm)
        snap = db.create(
            "VM",
            name_label=label,
            name_description=f"snapshot of {v.name}",
            is_a_snapshot=True,
            snapshot_of=vm,
            snapshot_time=now(),
            power_state="Halted",
            domid=-1,
            memory_static_max=src["memory_static_max"],
            memory_dynamic_max=src["memory_dynamic_max"],
            memory_dynamic_min=src["memory_dynamic_min"],
            memory_static_min=src["memory_static_min"],
            VCPUs_max=src["VCPUs_max"],
            VCPUs_at_startup=src["VCPUs_at_startup"],
            domain_type=src["domain_type"],
            platform=dict(src["platform"]),
            other_config=dict(src["other_config"]),
        )
        for vdi, userdevice in disks:
            parent = db.get("VDI", vdi)
            snap_vdi = self._vdi(
                f"{parent['name_label']} ({label})",
                parent["SR"],
                parent["virtual_size"],
                parent["physical_utilisation"] // 4,
                snapshot_of=vdi,
            )
            self._vbd(snap, snap_vdi, userdevice, "", False, bootable=userdevice == "0")
        for i, (net, mac) in enumerate(zip(networks, macs, strict=True)):
            self._vif(snap, self.networks[net], str(i), mac, False)
        self._finish_vm(snap)
