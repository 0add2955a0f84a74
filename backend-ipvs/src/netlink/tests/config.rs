//! Messages without a service: info, timeouts, flush.

use super::{assert_round_trip, parse};
use crate::netlink::{IpvsAttr, IpvsCmd, IpvsMessage};

// ipvsadm sends this before every command.
#[rustfmt::skip]
static GET_INFO: [u8; 4] = [
    0x0f, 0x01, 0x00, 0x00, // genlmsghdr: cmd IPVS_CMD_GET_INFO, version 1, reserved
];

// The kernel's reply to GET_INFO ("IP Virtual Server version 1.2.1 (size=4096)").
#[rustfmt::skip]
static INFO_REPLY: [u8; 20] = [
    0x0e, 0x01, 0x00, 0x00, // genlmsghdr: cmd IPVS_CMD_SET_INFO (the reply), version 1
    0x08, 0x00, 0x01, 0x00, // len 8, IPVS_INFO_ATTR_VERSION (1, not IPVS_CMD_ATTR_SERVICE)
    0x01, 0x02, 0x01, 0x00, // 0x010201: 1.2.1
    0x08, 0x00, 0x02, 0x00, // len 8, IPVS_INFO_ATTR_CONN_TAB_SIZE
    0x00, 0x10, 0x00, 0x00, // 4096
];

#[test]
fn get_info_request() {
    assert_round_trip(
        &GET_INFO,
        &IpvsMessage::new(IpvsCmd::GetInfo, vec![]),
        false,
    );
}

#[test]
fn get_info_reply_reads_info_attributes_not_service() {
    let expected = IpvsMessage::new(
        IpvsCmd::SetInfo,
        vec![
            IpvsAttr::InfoVersion(0x01_02_01),
            IpvsAttr::InfoConnTabSize(4096),
        ],
    );
    assert_round_trip(&INFO_REPLY, &expected, false);
}

// ipvsadm --set 900 120 300
#[rustfmt::skip]
static SET_CONFIG: [u8; 28] = [
    0x0c, 0x01, 0x00, 0x00, // genlmsghdr: cmd IPVS_CMD_SET_CONFIG, version 1
    0x08, 0x00, 0x04, 0x00, // len 8, IPVS_CMD_ATTR_TIMEOUT_TCP
    0x84, 0x03, 0x00, 0x00, // 900 s
    0x08, 0x00, 0x05, 0x00, // len 8, IPVS_CMD_ATTR_TIMEOUT_TCP_FIN
    0x78, 0x00, 0x00, 0x00, // 120 s
    0x08, 0x00, 0x06, 0x00, // len 8, IPVS_CMD_ATTR_TIMEOUT_UDP
    0x2c, 0x01, 0x00, 0x00, // 300 s
];

fn timeouts(cmd: IpvsCmd) -> IpvsMessage {
    IpvsMessage::new(
        cmd,
        vec![
            IpvsAttr::TimeoutTcp(900),
            IpvsAttr::TimeoutTcpFin(120),
            IpvsAttr::TimeoutUdp(300),
        ],
    )
}

#[test]
fn set_config_request() {
    assert_round_trip(&SET_CONFIG, &timeouts(IpvsCmd::SetConfig), false);
}

// ipvsadm -L --timeout: request IPVS_CMD_GET_CONFIG (0d 01 00 00); the kernel answers with
// the same bytes as SET_CONFIG above ("Timeout (tcp tcpfin udp): 900 120 300").
#[test]
fn get_config_reply() {
    assert_round_trip(&SET_CONFIG, &timeouts(IpvsCmd::SetConfig), false);
    assert_eq!(parse(&[0x0d, 0x01, 0x00, 0x00]).cmd, IpvsCmd::GetConfig);
}

// ipvsadm -C
#[test]
fn flush_request() {
    #[rustfmt::skip]
    let raw = [
        0x11, 0x01, 0x00, 0x00, // genlmsghdr: cmd IPVS_CMD_FLUSH, version 1
    ];
    assert_round_trip(&raw, &IpvsMessage::new(IpvsCmd::Flush, vec![]), false);
}
