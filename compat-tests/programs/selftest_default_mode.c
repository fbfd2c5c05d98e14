// SPDX-License-Identifier: GPL-2.0-only
/*
 * Linked into every VFIO selftest binary by selftests.sh (not part of the kernel tree).
 *
 * Tests without IOMMU-mode variants (vfio_pci_device_test, and the driver probe in
 * vfio_pci_driver_test's main) use libvfio's `default_iommu_mode`, which is "iommufd" in 7.3
 * and has no command line or environment knob. This constructor lets the runner choose it:
 *
 *     VFIO_SELFTESTS_DEFAULT_IOMMU_MODE=vfio_type1v2_iommu ./vfio_pci_device_test <bdf>
 *
 * Unset, the binaries behave exactly as the stock ones.
 */
#include <stdio.h>
#include <stdlib.h>

extern const char *default_iommu_mode;

__attribute__((constructor)) static void vfio_shim_default_iommu_mode(void)
{
	const char *mode = getenv("VFIO_SELFTESTS_DEFAULT_IOMMU_MODE");

	if (mode && *mode) {
		default_iommu_mode = mode;
		fprintf(stderr, "# default_iommu_mode=%s (VFIO_SELFTESTS_DEFAULT_IOMMU_MODE)\n", mode);
	}
}
