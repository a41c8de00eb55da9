/* Loads kernel modules by path (finit_module), for the arm64 test VM: its root filesystem is a
 * Debian minbase without kmod, and the kernel's 9p and virtio modules must load before the share
 * with the test binaries can be mounted (see xtask/src/arm64.rs). Built static by the cross gcc. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) != 0)
            perror(argv[i]);
        if (fd >= 0)
            close(fd);
    }
    return 0;
}
