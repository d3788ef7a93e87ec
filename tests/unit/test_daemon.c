/* Unit tests for the readiness notification of cairn_daemon (the sd_notify protocol): what
 * arrives on a datagram socket named by NOTIFY_SOCKET, as a path or an abstract name, and
 * that an unset or unusable NOTIFY_SOCKET changes nothing but a log line. Criterion runs each
 * test in its own process, so "STOPPING=1 at most once" starts afresh in each. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "cairn_daemon.h"
#include "cairn_err.h"

/* A datagram socket bound to name (a path, or "@..." for an abstract one), 2 s receive timeout. */
static int listen_dgram(const char *name)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    memcpy(sa.sun_path, name, n);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (name[0] == '@')
        sa.sun_path[0] = 0;
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, len), 0, "bind %s: %s", name, strerror(errno));
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static const char *recv_msg(int fd, char *buf, size_t cap)
{
    ssize_t n = recv(fd, buf, cap - 1, 0);
    cr_assert_gt(n, 0, "nothing received: %s", strerror(errno));
    buf[n] = 0;
    return buf;
}

static void nothing_more(int fd)
{
    char buf[64];
    cr_assert_lt(recv(fd, buf, sizeof buf, MSG_DONTWAIT), 0, "an unexpected datagram");
}

Test(daemon, notify_path_socket)
{
    char path[108];
    snprintf(path, sizeof path, "/tmp/cairn-notify-%d.sock", (int)getpid());
    unlink(path);
    int fd = listen_dgram(path);
    setenv("NOTIFY_SOCKET", path, 1);
    char buf[512];
    cr_assert_eq(cairn_daemon_notify_ready("unit\nready"), 0);
    /* a newline in the status would start another assignment */
    cr_assert_str_eq(recv_msg(fd, buf, sizeof buf), "READY=1\nSTATUS=unit ready");
    cr_assert_eq(cairn_daemon_notify_ready(NULL), 0);
    cr_assert_str_eq(recv_msg(fd, buf, sizeof buf), "READY=1\nSTATUS=ready");
    cr_assert_eq(cairn_daemon_notify_stopping(), 0);
    cr_assert_str_eq(recv_msg(fd, buf, sizeof buf), "STOPPING=1\nSTATUS=cairn stopping");
    cr_assert_eq(cairn_daemon_notify_stopping(), 0);
    nothing_more(fd); /* once per process */
    close(fd);
    unlink(path);
}

Test(daemon, notify_abstract_socket)
{
    char name[108];
    snprintf(name, sizeof name, "@cairn-notify-test-%d", (int)getpid());
    int fd = listen_dgram(name);
    setenv("NOTIFY_SOCKET", name, 1);
    char buf[512];
    cr_assert_eq(cairn_daemon_notify_ready("abstract ready"), 0);
    cr_assert_str_eq(recv_msg(fd, buf, sizeof buf), "READY=1\nSTATUS=abstract ready");
    close(fd);
}

Test(daemon, notify_unset_is_a_no_op)
{
    unsetenv("NOTIFY_SOCKET");
    cr_assert_eq(cairn_daemon_notify_ready("x"), 0);
    cr_assert_eq(cairn_daemon_notify_stopping(), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    cr_assert_eq(cairn_daemon_notify_ready("x"), 0);
}

Test(daemon, notify_unusable_socket_is_not_fatal)
{
    setenv("NOTIFY_SOCKET", "/nonexistent-dir/notify.sock", 1);
    cr_assert_lt(cairn_daemon_notify_ready("x"), 0);
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    cr_assert_eq(cairn_daemon_notify_ready("x"), CAIRN_EINVAL);
    setenv("NOTIFY_SOCKET", "vsock:2:1234", 1); /* systemd's, which Cairn does not speak */
    cr_assert_eq(cairn_daemon_notify_ready("x"), CAIRN_EINVAL);
    char longname[200];
    memset(longname, 'a', sizeof longname - 1);
    longname[0] = '/';
    longname[sizeof longname - 1] = 0;
    setenv("NOTIFY_SOCKET", longname, 1);
    cr_assert_eq(cairn_daemon_notify_ready("x"), CAIRN_EINVAL);
}
