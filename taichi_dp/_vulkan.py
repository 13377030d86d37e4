"""The Vulkan physical devices of this machine, read through the Vulkan loader (``libvulkan.so.1``) with
ctypes: no Taichi runtime is started and nothing is compiled.

``arch="auto"`` uses it to skip Vulkan when every device is a CPU-type one (Mesa's llvmpipe: a correct
software device for tests, several times slower than Taichi's own CPU arch).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from functools import cache

_TYPES = {0: "other", 1: "integrated-gpu", 2: "discrete-gpu", 3: "virtual-gpu", 4: "cpu"}

# VkPhysicalDeviceProperties: apiVersion, driverVersion, vendorID, deviceID (uint32 each), deviceType
# (enum, int32), deviceName (char[256]), ... (824 bytes in all; a larger buffer is passed).
_TYPE_OFFSET, _NAME_OFFSET, _PROPS_BYTES = 16, 20, 4096


@dataclass(frozen=True)
class VulkanDevice:
    name: str
    kind: str  # "discrete-gpu", "integrated-gpu", "virtual-gpu", "cpu" or "other"

    @property
    def software(self) -> bool:
        return self.kind == "cpu"


class _InstanceCreateInfo(ctypes.Structure):
    _fields_ = [
        ("sType", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("flags", ctypes.c_uint32),
        ("pApplicationInfo", ctypes.c_void_p),
        ("enabledLayerCount", ctypes.c_uint32),
        ("ppEnabledLayerNames", ctypes.c_void_p),
        ("enabledExtensionCount", ctypes.c_uint32),
        ("ppEnabledExtensionNames", ctypes.c_void_p),
    ]


@cache
def devices() -> tuple[VulkanDevice, ...]:
    """Every Vulkan physical device the loader reports (empty without a loader or an ICD)."""
    path = ctypes.util.find_library("vulkan") or "libvulkan.so.1"
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return ()
    info = _InstanceCreateInfo(sType=1)  # VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO
    instance = ctypes.c_void_p()
    if lib.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(instance)) != 0:
        return ()
    try:
        count = ctypes.c_uint32(0)
        if lib.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), None) != 0 or count.value == 0:
            return ()
        handles = (ctypes.c_void_p * count.value)()
        if lib.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), handles) not in (0, 5):  # 5: VK_INCOMPLETE
            return ()
        found = []
        for h in handles[: count.value]:
            props = ctypes.create_string_buffer(_PROPS_BYTES)
            lib.vkGetPhysicalDeviceProperties(ctypes.c_void_p(h), props)
            kind = int.from_bytes(props.raw[_TYPE_OFFSET : _TYPE_OFFSET + 4], "little")
            name = props.raw[_NAME_OFFSET : _NAME_OFFSET + 256].split(b"\0", 1)[0].decode(errors="replace")
            found.append(VulkanDevice(name, _TYPES.get(kind, "other")))
        return tuple(found)
    finally:
        lib.vkDestroyInstance(instance, None)


def has_hardware_device() -> bool:
    """Whether any Vulkan device is a real GPU (not a CPU-type software device)."""
    return any(not d.software for d in devices())
