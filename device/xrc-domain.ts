/**
 * An XRC domain (`struct ibv_xrcd`, ibv_open_xrcd(3)): the scope within which XRC target QPs
 * may deliver into XRC SRQs. A message that names an SRQ of another domain is refused by the
 * target (a NAK with the invalid-request syndrome; the requester completes with
 * IBV_WC_REM_INV_REQ_ERR). Sharing a domain between processes through a file is the driver's
 * business; the device knows only the domain number.
 */
export class XrcDomain {
  destroyed = false;
  /** XRC SRQs and target QPs created in it (closing it while any remain is EBUSY). */
  users = 0;
  constructor(readonly xrcdNum: number) {}
}
