# ruff: noqa: E501
"""Parsing of HAProxy 2.6 Runtime API answers, captured from the test bed's HAProxy (2.6.12).

The captures were taken with render_config's layout: backend ``live`` with 4 slots and a dynamic
cookie, ``green`` with 3; live/s1 draining with one request in flight, live/s2 ready at weight 3,
live/s3 assigned to a port where nothing listens (down), live/s4 never assigned.
"""

from __future__ import annotations

import re

import pytest

from docker_delivery.routing import (
    BackendSpec,
    FrontendSpec,
    HaproxyRouter,
    RouterError,
    ServerState,
    render_config,
)
from docker_delivery.routing.haproxy import (
    admin_state_of,
    backend_stats,
    config_hash,
    operational_of,
    parse_info,
    parse_map,
    parse_servers_state,
    parse_stat_csv,
    reply_error,
    server_states,
    slot_of,
)

# show servers state live
SERVERS_STATE_LIVE = """\
1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
4 live 1 s1 192.168.176.3 2 12 1 1 0 15 3 2 6 0 0 0 - 8080 - 0 0 - - 0
4 live 2 s2 192.168.176.4 2 4 3 1 9 15 3 2 6 0 0 0 - 8080 - 0 0 - - 0
4 live 3 s3 192.168.176.4 0 4 1 1 8 8 2 0 6 0 0 0 - 9 - 0 0 - - 0
4 live 4 s4 0.0.0.0 0 5 1 1 15 1 0 0 14 0 0 0 - 8080 - 0 0 - - 0
"""

# show stat live 6 -1  (servers and the BACKEND row)
STAT_LIVE = """\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,
live,s1,0,0,1,1,,3,250,508,,0,,0,0,0,0,DRAIN,1,1,0,0,0,0,0,,1,4,1,,2,,2,1,,2,L7OK,200,1,0,2,0,0,0,0,,,,2,0,0,,,,,0,,,0,0,1,1,,,,Layer7 check passed,,1,2,2,,,,192.168.176.3:8080,654fea4c4597d095,http,,,,,,,,0,3,0,,,1,,0,0,1,1,0,1,0,1,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
live,s2,0,0,0,1,,7,888,1754,,0,,0,0,0,0,UP,3,1,0,0,0,9,0,,1,4,2,,7,,2,0,,7,L7OK,200,3,0,6,0,1,0,0,,,,7,0,0,,,,,8,,,0,0,1,2,,,,Layer7 check passed,,1,2,2,,,,192.168.176.4:8080,ada4485a1db28cea,http,,,,,,,,0,7,0,,,0,,0,0,1,8,0,0,0,0,1,3,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
live,s3,0,0,0,1,,1,0,0,,0,,0,0,0,1,DOWN,1,1,0,1,1,8,8,,1,4,3,,1,,2,0,,1,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,8,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,1,2,0,,,,192.168.176.4:9,de032e859e7e3178,http,,,,,,,,0,1,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
live,s4,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,0,0,15,15,,1,4,4,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,0.0.0.0:8080,50fde85e128f6b72,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
live,BACKEND,0,0,1,1,1997,10,1138,2262,0,0,,0,0,0,1,UP,3,1,0,,0,9,0,,1,4,0,,10,,1,1,,9,,,,0,8,0,1,0,0,,,,9,0,0,0,0,0,0,0,,,0,0,1,2,,,,,,,,,,,,,DDSRV,http,roundrobin,,,,,,,0,11,0,0,0,,,0,0,1,8,0,,,,,3,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2,1,24,24,3913,1794,0,0,
"""

# show servers state green  (a fresh backend: every slot "disabled" in the configuration)
SERVERS_STATE_GREEN = """\
1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
5 green 1 s1 0.0.0.0 0 5 1 1 15 1 0 0 14 0 0 0 - 8080 - 0 0 - - 0
5 green 2 s2 0.0.0.0 0 5 1 1 15 1 0 0 14 0 0 0 - 8080 - 0 0 - - 0
5 green 3 s3 0.0.0.0 0 5 1 1 15 1 0 0 14 0 0 0 - 8080 - 0 0 - - 0
"""

# show map /usr/local/etc/haproxy/routes.map, after "set map ... web green" and "add map ...
# other green" sent twice ("add map" does not check for an existing key: two entries)
SHOW_MAP = """\
0x556f0aa3aef0 web green
0x556f0ab3e470 other green
0x7f9de0047250 other green

"""

# show backend
SHOW_BACKEND = """\
# name
live
green
"""

# show stat -1 1 -1  (frontends: "web" switchable, "x" fixed)
STAT_FRONTENDS = """\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,
web,FRONTEND,,,0,0,9984,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,0,,,,0,0,0,0,0,0,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,0,0,0,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
x,FRONTEND,,,0,0,9984,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,3,0,,,,0,0,0,0,,,,0,0,0,0,0,0,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,0,0,0,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
"""

# show info (first lines)
SHOW_INFO = """\
Name: HAProxy
Version: 2.6.12-1+deb12u3
Release_date: 2025/10/03
Nbthread: 2
Uptime_sec: 114
CurrConns: 0

"""

# Replies captured from the Runtime API: (command, reply).
REFUSALS = [
    ("set server live/s9 state ready", "No such server.\n\n"),
    ("set server nope/s1 weight 3", "No such backend.\n\n"),
    (
        "set server live/s2 weight 300",
        "Absolute weight can only be between 0 and 256 inclusive.\n\n",
    ),
    ("set weight live/s1 abc", "Empty weight string empty or preceded by garbage\n\n"),
    ("set server live/s2 addr 1.2.3", "Invalid addr '1.2.3' by 'stats socket command'\n\n"),
    (
        "set server live/s4 state bogus",
        "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n",
    ),
    ("set server live s4 state ready", "Require 'backend/server'.\n\n"),
    ("set map /usr/local/etc/haproxy/routes.map other green", "entry not found.\n\n"),
    ("show map /nope.map", "Unknown map identifier. Please use #<id> or <file>.\n\n"),
    ("show servers state nope", "Can't find backend.\n\n"),
    ("show stat nope 6 -1", "No such proxy.\n\n"),
    (
        "bogus",
        "Unknown command, but maybe one of the following ones is a better match:\n  show fd [num]  : dump list of file descriptors in use\n\n",
    ),
]
ACCEPTED = [
    ("set server live/s1 state ready", "\n"),
    (
        "set server live/s1 addr 192.168.0.3 port 8080",
        "IP changed from '0.0.0.0' to '192.168.0.3', no need to change the port by 'stats socket command'\n\n",
    ),
    (
        "set server live/s1 addr 192.168.0.3 port 8080",
        "no need to change the addr, no need to change the port by 'stats socket command'\n\n",
    ),
    (
        "set server live/s1 addr 192.168.0.3 port 9090",
        "no need to change the addr, port changed from '8080' to '9090' by 'stats socket command'\n\n",
    ),
    ("get weight live/s1", "2 (initial 1)\n\n"),
    ("show map", SHOW_MAP),
    ("show servers state live", SERVERS_STATE_LIVE),
    ("show stat live 6 -1", STAT_LIVE),
    ("show backend", SHOW_BACKEND),
    ("show info", SHOW_INFO),
]


# -- admin and operational states ---------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "state"),
    [
        (0, "ready"),
        (4, "ready"),  # CMAINT alone: "disabled" in the config, then "state ready"
        (5, "maint"),  # FMAINT|CMAINT: a fresh "disabled" slot
        (1, "maint"),
        (2, "maint"),  # IMAINT (tracked server)
        (0x20, "maint"),  # RMAINT (resolution)
        (12, "drain"),  # CMAINT|FDRAIN
        (8, "drain"),
        (0x10, "drain"),
        (9, "maint"),  # maint wins over drain
        (0x40, "ready"),  # FQDN changed: not a state
    ],
)
def test_admin_state_mask(mask: int, state: str) -> None:
    assert admin_state_of(mask) == state


def test_operational_states() -> None:
    assert operational_of(2, "ready") == "up"
    assert operational_of(1, "ready") == "starting"
    assert operational_of(3, "drain") == "stopping"
    assert operational_of(0, "ready") == "down"
    assert operational_of(0, "maint") == "stopped"
    assert operational_of(7, "ready") == "unknown(7)"


# -- show servers state / show stat ----------------------------------------------------------


def test_parse_servers_state_columns() -> None:
    rows = parse_servers_state(SERVERS_STATE_LIVE)
    assert len(rows) == 4
    assert rows[1]["srv_name"] == "s2"
    assert rows[1]["srv_uweight"] == "3"
    assert rows[2]["srv_port"] == "9"
    assert rows[3]["srv_addr"] == "0.0.0.0"


def test_parse_servers_state_rejects_other_format() -> None:
    with pytest.raises(RouterError, match="format"):
        parse_servers_state("2\n# be_id be_name\n1 x\n")
    assert parse_servers_state("") == []


def test_parse_stat_csv_uses_the_header() -> None:
    rows = parse_stat_csv(STAT_LIVE)
    assert [r["svname"] for r in rows] == ["s1", "s2", "s3", "s4", "BACKEND"]
    assert rows[0]["status"] == "DRAIN"
    assert rows[0]["scur"] == "1"
    assert rows[0]["addr"] == "192.168.176.3:8080"
    assert rows[4]["cookie"] == "DDSRV"
    assert rows[4]["algo"] == "roundrobin"
    with pytest.raises(RouterError):
        parse_stat_csv("No such proxy.\n")


def test_server_states_join() -> None:
    servers = server_states("live", SERVERS_STATE_LIVE, STAT_LIVE)
    assert servers[0] == ServerState(
        backend="live",
        name="s1",
        slot=1,
        address="192.168.176.3",
        port=8080,
        admin_state="drain",
        operational="up",
        weight=1,
        current_sessions=1,
        queued=0,
        check_status="L7OK",
    )
    s2, s3, s4 = servers[1:]
    assert (s2.admin_state, s2.operational, s2.weight, s2.current_sessions) == ("ready", "up", 3, 0)
    assert (s3.admin_state, s3.operational, s3.port, s3.check_status) == (
        "ready",
        "down",
        9,
        "L4CON",
    )
    assert (s4.admin_state, s4.operational, s4.assigned) == ("maint", "stopped", False)
    assert s2.endpoint == "192.168.176.4:8080"


def test_fresh_backend_is_all_maint_and_unassigned() -> None:
    servers = server_states("green", SERVERS_STATE_GREEN, "# pxname,svname,scur\n")
    assert [(s.slot, s.admin_state, s.assigned) for s in servers] == [
        (1, "maint", False),
        (2, "maint", False),
        (3, "maint", False),
    ]


def test_backend_stats() -> None:
    stats = backend_stats("live", STAT_LIVE)
    assert (stats.status, stats.requests, stats.hrsp_2xx, stats.hrsp_4xx, stats.hrsp_5xx) == (
        "UP",
        9,
        8,
        1,
        0,
    )
    assert (stats.current_sessions, stats.sessions_total, stats.rtime_ms, stats.ttime_ms) == (
        1,
        10,
        1,
        2,
    )
    assert [s.name for s in stats.servers] == ["s1", "s2", "s3", "s4"]
    s2 = stats.server(2)
    assert (s2.requests, s2.hrsp_2xx, s2.hrsp_4xx, s2.selected, s2.rtime_ms) == (7, 6, 1, 7, 1)
    assert stats.server(3).status == "DOWN"
    assert stats.server(1).current_sessions == 1
    with pytest.raises(RouterError):
        stats.server(9)
    with pytest.raises(RouterError, match="BACKEND"):
        backend_stats("green", STAT_LIVE)


def test_parse_map_first_entry_wins() -> None:
    assert parse_map(SHOW_MAP) == {"web": "green", "other": "green"}
    assert parse_map("\n") == {}


def test_frontend_rows() -> None:
    rows = parse_stat_csv(STAT_FRONTENDS)
    assert [(r["pxname"], r["svname"], r["status"]) for r in rows] == [
        ("web", "FRONTEND", "OPEN"),
        ("x", "FRONTEND", "OPEN"),
    ]


def test_parse_info() -> None:
    info = parse_info(SHOW_INFO)
    assert info["Name"] == "HAProxy"
    assert info["Version"].startswith("2.6.")


def test_slot_of() -> None:
    assert slot_of("s12") == 12
    assert slot_of("web3", "web") == 3
    with pytest.raises(RouterError):
        slot_of("srv1")


@pytest.mark.parametrize(("cmd", "reply"), REFUSALS)
def test_refusals_are_errors(cmd: str, reply: str) -> None:
    error = reply_error(reply)
    assert error is not None, cmd
    assert error == reply.splitlines()[0].strip()


@pytest.mark.parametrize(("cmd", "reply"), ACCEPTED)
def test_answers_are_not_errors(cmd: str, reply: str) -> None:
    assert reply_error(reply) is None, cmd


def test_map_entry_named_like_an_error_is_data() -> None:
    assert reply_error("0x55d0 error-pages live\n\n") is None


# -- read-back: a fake HAProxy that acknowledges changes but does not apply them -----------


class DeafHaproxy(HaproxyRouter):
    """Answers like the captured HAProxy, accepts every change, changes nothing."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.sent: list[str] = []
        super().__init__("fake", 0, log=self.lines.append)

    def _send(self, cmd: str) -> str:
        self.sent.append(cmd)
        if cmd == "show servers state live":
            return SERVERS_STATE_LIVE
        if cmd == "show stat live 4 -1":
            return STAT_LIVE
        if cmd.startswith("show map"):
            return SHOW_MAP
        if cmd == "show backend":
            return SHOW_BACKEND
        if cmd == "show stat -1 1 -1":
            return STAT_FRONTENDS
        if cmd.startswith("set server") and " addr " in cmd:
            return "IP changed from '0.0.0.0' to '10.0.0.9', no need to change the port by 'stats socket command'\n\n"
        return "\n"


def test_read_back_weight() -> None:
    with pytest.raises(
        RouterError, match=r"live/s2: applied weight 5 but HAProxy reports weight 3"
    ):
        DeafHaproxy().set_weight("live", 2, 5)


def test_read_back_state() -> None:
    with pytest.raises(RouterError, match=r"applied state maint but HAProxy reports state ready"):
        DeafHaproxy().set_state("live", 2, "maint")


def test_read_back_address() -> None:
    with pytest.raises(
        RouterError, match=r"applied 10.0.0.9:8080 but HAProxy reports 0.0.0.0:8080"
    ):
        DeafHaproxy().assign("live", 4, "10.0.0.9", 8080)


def test_read_back_route() -> None:
    with pytest.raises(RouterError, match=r"route web: applied live but HAProxy reports green"):
        DeafHaproxy().route("web", "live")


def test_changes_are_refused_before_anything_is_sent() -> None:
    router = DeafHaproxy()
    with pytest.raises(RouterError, match=r"serves 192.168.176.4:8080 \(ready\)"):
        router.assign("live", 2, "10.0.0.9", 8080)
    with pytest.raises(RouterError, match="IP address"):
        router.assign("live", 4, "app.internal", 8080)
    with pytest.raises(RouterError, match="65535"):
        router.assign("live", 4, "10.0.0.9", 70000)
    with pytest.raises(RouterError, match="holds no instance"):
        router.set_state("live", 4, "ready")
    with pytest.raises(RouterError, match="0 to 256"):
        router.set_weight("live", 2, 300)
    with pytest.raises(RouterError, match="no backend 'blue'"):
        router.route("web", "blue")
    with pytest.raises(RouterError, match="no frontend 'wbe'"):
        router.route("wbe", "live")
    with pytest.raises(RouterError, match="is ready, not draining"):
        router.wait_drained("live", 2, timeout=0.1)
    with pytest.raises(RouterError, match="one Runtime API command"):
        router.command("show info; show stat")
    assert not [c for c in router.sent if not c.startswith("show")]


def test_wait_drained_names_what_is_left() -> None:
    with pytest.raises(
        RouterError,
        match=r"live/s1 \(192.168.176.3:8080\) still has 1 session\(s\) and 0 queued.*0.2s",
    ):
        DeafHaproxy().wait_drained("live", 1, timeout=0.2, poll=0.05)


def test_unchanged_state_sends_no_command() -> None:
    router = DeafHaproxy()
    router.set_state("live", 1, "drain")
    router.set_weight("live", 2, 3)
    router.assign("live", 2, "192.168.176.4", 8080)
    assert all(c.startswith("show") for c in router.sent)


# -- render_config ---------------------------------------------------------------------------


def _config() -> str:
    return render_config(
        {"web": FrontendSpec(8080, "live"), "ops": FrontendSpec(8081, "green", switchable=False)},
        {
            "live": BackendSpec(slots=4, cookie="DDSRV", cookie_key="k3y"),
            "green": BackendSpec(slots=3, port=9000, health_path="/ready", check_interval_ms=500),
        },
        admin_port=9100,
    )


def test_render_config_layout() -> None:
    config = _config()
    lines = [line.strip() for line in config.splitlines()]
    for expected in [
        "log stdout format raw local0",
        "stats socket ipv4@127.0.0.1:9100 level admin expose-fd listeners",
        "stats timeout 30s",
        "hard-stop-after 30s",
        "mode http",
        "option forwardfor",
        "option redispatch",
        "retries 2",
        "retry-on conn-failure",
        "timeout connect 2s",
        "timeout client 65s",
        "timeout server 65s",
        "timeout http-keep-alive 10s",
    ]:
        assert expected in lines, expected
    assert config.count("balance roundrobin") == 2
    assert config.count("http-check expect status 200") == 2


def test_render_config_frontends() -> None:
    config = _config()
    web = config.split("frontend web\n", 1)[1].split("\n\n", 1)[0]
    assert "bind :8080" in web
    assert "use_backend %[str(web),map(/usr/local/etc/haproxy/routes.map,live)]" in web
    assert "default_backend live" in web
    ops = config.split("frontend ops\n", 1)[1].split("\n\n", 1)[0]
    assert "use_backend" not in ops
    assert "default_backend green" in ops


def test_render_config_backends() -> None:
    config = _config()
    live = config.split("\nbackend live\n", 1)[1].split("\n\n", 1)[0]
    assert "option httpchk GET /health" in live
    assert "cookie DDSRV insert indirect nocache dynamic" in live
    assert "dynamic-cookie-key k3y" in live
    assert "server-template s 1-4 0.0.0.0:8080 disabled check inter 2000 fall 2 rise 1" in live
    green = config.split("\nbackend green\n", 1)[1]
    assert "option httpchk GET /ready" in green
    assert "cookie" not in green
    assert "server-template s 1-3 0.0.0.0:9000 disabled check inter 500 fall 2 rise 1" in green


def test_render_config_is_stable_and_hashable() -> None:
    assert _config() == _config()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", config_hash(_config()))
    assert config_hash(_config()) != config_hash(_config().replace("k3y", "other"))


@pytest.mark.parametrize(
    ("frontends", "backends", "message"),
    [
        ({"web": FrontendSpec(80, "live")}, {}, "at least one backend"),
        ({"web": FrontendSpec(80, "nope")}, {"live": BackendSpec()}, "not defined"),
        ({"live": FrontendSpec(80, "live")}, {"live": BackendSpec()}, "must differ"),
        ({"web": FrontendSpec(9999, "live")}, {"live": BackendSpec()}, "admin port"),
        (
            {"a": FrontendSpec(80, "live"), "b": FrontendSpec(80, "live")},
            {"live": BackendSpec()},
            "port 80",
        ),
        ({"bad name": FrontendSpec(80, "live")}, {"live": BackendSpec()}, "invalid frontend"),
    ],
)
def test_render_config_refuses(frontends, backends, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RouterError, match=message):
        render_config(frontends, backends)


def test_specs_validate() -> None:
    with pytest.raises(RouterError):
        BackendSpec(slots=0)
    with pytest.raises(RouterError):
        BackendSpec(health_path="health")
    with pytest.raises(RouterError):
        BackendSpec(cookie="a b")
    with pytest.raises(RouterError):
        FrontendSpec(70000, "live")
