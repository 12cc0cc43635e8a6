/*
 * psc_chan — the SDK's group channel over ZeroMQ (psc_peer_chan of
 * psc/peer.h): one PUB socket bound at the peer's data endpoint, one SUB
 * socket connected to the data endpoints of the members of every PSC held and
 * subscribed to each PSC's 20-byte frame prefix; frames are sealed and opened
 * with a psc_peer_msg (docs/protocol.md §13).
 *
 * Why PUB/SUB: a group message goes to every member, and libzmq does the
 * fan-out (one zmq_send, one copy per connected subscriber, in its I/O
 * thread) and the filtering by prefix on the publisher side, so a member only
 * gets frames of PSCs it subscribed to; a PUB never blocks its caller (a slow
 * subscriber loses messages at its high-water mark instead). Delivery is
 * best effort, like the datagram-style overlay traffic it carries: a
 * subscriber that is not connected yet misses what is published meanwhile.
 *
 * Relay mode (psc_peer_chan_relay): the PUB connects to a psc-relay's XSUB
 * and the SUB to its XPUB, subscribed per PSC as in direct mode; the relay
 * (peer-sdk/tools/psc_relay_main.c, docs/relay.md) does the fan-out, so a
 * group costs 2N connections instead of N(N-1). Frames stay byte-identical.
 *
 * Owns: the two sockets, the psc_peer_msg, the current connection and
 * subscription sets, drop counters.
 * Never: deliver a frame that psc_peer_open() did not accept, block in
 * psc_peer_send(), or outlive its psc_peer (free the channel first: its
 * sockets live in the peer's ZeroMQ context).
 */
#ifndef PSC_CHAN_H
#define PSC_CHAN_H

#include "psc/peer.h"

#define PSC_CHAN_PREFIX_LEN 20	    /* version, flags, suite, PSC ID */
#define PSC_CHAN_RESYNC_MS 5000	    /* membership re-read even without an epoch change */
#define PSC_CHAN_DRAIN_MAX 1024	    /* frames handled per process call */
#define PSC_CHAN_PUB_LINGER_MS 1000 /* queued frames flushed at close, at most this long */
#define PSC_CHAN_SENDER_OFF 28	    /* sender Node-ID in a frame: 1+1+2+16+8 (§13.2) */

/* The 20-byte SUB prefix of a PSC's frames (suite and sender_signatures as in
 * its psc_peer_psc_info). */
void psc_chan_prefix(const uint8_t psc_id[PSC_PEER_ID_LEN], uint16_t suite, int sender_signatures,
		     uint8_t out[PSC_CHAN_PREFIX_LEN]);

/* Re-reads the PSCs held and their members and updates the SUB connections
 * and subscriptions (force = 1: even if no epoch changed). */
psc_rc psc_chan_sync(psc_peer_chan *c, int force, psc_err *err) PSC_WUR;

/* Endpoints the SUB socket is connected to (tests). */
size_t psc_chan_test_connections(const psc_peer_chan *c);

#endif
