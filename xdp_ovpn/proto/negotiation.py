"""Data-channel negotiation and key derivation of a session: a server's choice of cipher,
peer-id and key export for a client (multi_client_set_protocol_options), p2p NCP, what a
client takes from the PUSH_REPLY (ssl_ncp.c, push.c), and the data keys of a key state.

`Negotiation` is the part of `Session` (session.py) that does it: its methods work on the
session's state and are only ever called through a Session."""

from __future__ import annotations

from .constants import (
    EPOCH_PROTOCOL_FLAG,
    KEY2_LEN,
    TLS_EKM_LABEL,
    IVProto,
)
from .epochkeys import epoch_format_agreed, epoch_format_pushed, initial_epoch_keys
from .errors import NegotiationError
from .events import (
    KeysReady,
    PushReplyReceived,
)
from .keys import (
    EKM_P2P_PEER_ID_LABEL,
    EKM_P2P_PEER_ID_LEN,
    prf_key_expansion,
    split_key2,
)
from .keystate import KS, KeyState
from .ncp import (
    check_pushed_cipher,
    client_cipher_without_push,
    negotiate_p2p,
    peer_cipher_list,
    peer_supports_ncp,
    select_server_cipher,
)
from .peerinfo import iv_proto
from .peerinfo import options_string_extract as _options_extract
from .sessionstate import State


class Negotiation:
    """Session's data-channel negotiation and key derivation."""

    # ------------------------------------------------ negotiation + keys

    def _server_connect(self) -> None:
        """multi_client_set_protocol_options + key generation for the first key."""
        bits = iv_proto(self.peer_info)
        if IVProto.DATA_V2 not in bits:
            self._fail_auth("Data channel negotiation failed (missing DATA_V2)")
            return
        try:
            self.negotiated_cipher = select_server_cipher(
                self.config.data_ciphers,
                self.peer_info,
                _remote_cipher(self.remote_options),
                self.config.data_ciphers_fallback,
            )
        except NegotiationError as exc:
            self._fail_auth(f"Data channel cipher negotiation failed ({exc})")
            return
        self.use_ekm = self.config.allow_ekm and IVProto.TLS_KEY_EXPORT in bits
        # 2.7 turns the epoch format on only for a cipher NCP chose, not the fallback
        # (multi.c: multi_client_set_protocol_options); key derivation does not matter.
        via_ncp = bool(peer_cipher_list(self.peer_info)) or bool(
            _remote_cipher(self.remote_options))
        self.use_epoch = via_ncp and epoch_format_agreed(
            self.peer_info, self.negotiated_cipher, self.config.epoch_data)
        self.peer_cc_exit = IVProto.CC_EXIT_NOTIFY in bits
        if IVProto.REQUEST_PUSH in bits:
            self._push_requested = True
        self.state = State.ESTABLISHED

    def _negotiated_push_options(self) -> list[str]:
        """Per-client options prepare_push_reply adds after the configured ones."""
        opts = [f"peer-id {self.peer_id}"]
        if peer_supports_ncp(self.peer_info):
            opts.append(f"cipher {self.negotiated_cipher}")
        flags = ""
        if self.peer_cc_exit:
            flags += " cc-exit"
            if self.use_ekm:
                flags += " tls-ekm"
        elif self.use_ekm:
            opts.append("key-derivation tls-ekm")
        if self.use_epoch:
            flags += " " + EPOCH_PROTOCOL_FLAG
        if flags:
            opts.append("protocol-flags" + flags)
        if "IV_MTU" in self.peer_info:
            opts.append(f"tun-mtu {self.config.tun_mtu}")
        return opts

    def _p2p_negotiate(self, ks: KeyState) -> None:
        bits = iv_proto(self.peer_info)
        export = None
        if self.config.allow_ekm and IVProto.TLS_KEY_EXPORT in bits:
            export = ks.tls.export_keying_material(EKM_P2P_PEER_ID_LABEL, EKM_P2P_PEER_ID_LEN)
        params = negotiate_p2p(
            self.config.data_ciphers,
            self.peer_info,
            self.role.tls_server,
            self.config.data_ciphers_fallback,
            export_peer_id=export,
            local_ekm=self.config.allow_ekm,
            local_epoch=self.config.epoch_data,
        )
        self.negotiated_cipher = params.cipher
        self.peer_id = params.peer_id
        self.use_ekm = params.use_ekm
        self.use_epoch = params.epoch
        self.peer_cc_exit = params.cc_exit

    def _client_pushed(self, options: list[str]) -> None:
        """do_deferred_options for a pulling client: cipher, peer-id, key derivation."""
        cipher: str | None = None
        peer_id: int | None = None
        for opt in options:
            words = opt.split()
            if not words:
                continue
            if words[0] == "cipher" and len(words) == 2:
                cipher = words[1]
            elif words[0] == "peer-id" and len(words) == 2 and words[1].isdigit():
                peer_id = int(words[1])
            elif words[0] == "key-derivation" and words[1:] == ["tls-ekm"]:
                self.use_ekm = self.config.allow_ekm
            elif words[0] == "protocol-flags":
                if epoch_format_pushed(words[1:]):
                    if not self.config.epoch_data:
                        # Not offered (the data plane lacks it): the server's packets
                        # would be unreadable.
                        raise NegotiationError(
                            "server pushed the epoch data format, not offered")
                    self.use_epoch = True
                if "tls-ekm" in words[1:]:
                    self.use_ekm = self.config.allow_ekm
                if "cc-exit" in words[1:]:
                    self.peer_cc_exit = True
        if cipher is not None:
            self.negotiated_cipher = check_pushed_cipher(
                cipher, self.config.data_ciphers, self.config.data_ciphers_fallback
            )
        else:
            self.negotiated_cipher = client_cipher_without_push(
                _remote_cipher(self.remote_options),
                self.config.data_ciphers,
                self.config.data_ciphers_fallback,
            )
        if peer_id is None:
            raise NegotiationError("server pushed no peer-id (DATA_V1 is not supported)")
        self.peer_id = peer_id
        self._events.append(PushReplyReceived(list(options)))
        self.state = State.ESTABLISHED
        assert self._primary is not None
        self._generate_keys(self._primary)

    def _generate_keys(self, ks: KeyState) -> None:
        """tls_session_generate_data_channel_keys: EKM or the TLS 1.0 PRF, then KeysReady."""
        if ks.state >= KS.GENERATED_KEYS:
            return
        cipher = self.negotiated_cipher
        assert cipher is not None and self.peer_id is not None
        if self.use_ekm:
            key2 = ks.tls.export_keying_material(TLS_EKM_LABEL, KEY2_LEN)
        else:
            key2 = self._prf_key2(ks)
        ks.keys = split_key2(key2, cipher, is_server=self.role.tls_server)
        ks.state = KS.GENERATED_KEYS
        ks.established = ks.established or self._now
        if self.use_epoch:  # E_1 of each direction (ssl.c: init_epoch_keys)
            send, receive = initial_epoch_keys(key2, self.role.tls_server)
            keys = (send.secret, b"", receive.secret, b"")
        else:
            keys = (ks.keys.encrypt_key, ks.keys.encrypt_nonce_tail, ks.keys.decrypt_key,
                    ks.keys.decrypt_nonce_tail)
        self._events.append(KeysReady(ks.key_id, cipher, self.peer_id, *keys,
                                      ekm=self.use_ekm, epoch=self.use_epoch))

    def _prf_key2(self, ks: KeyState) -> bytes:
        local, remote = ks.local_km, ks.remote_km
        assert local is not None and remote is not None and self.remote_session_id
        client, server = (remote, local) if self.role.tls_server else (local, remote)
        client_sid, server_sid = (
            (self.remote_session_id, self.session_id)
            if self.role.tls_server
            else (self.session_id, self.remote_session_id)
        )
        assert client.pre_master is not None
        return prf_key_expansion(
            client.pre_master,
            client.random1,
            server.random1,
            client.random2,
            server.random2,
            client_sid,
            server_sid,
        )


# ------------------------------------------------------------------ helpers


def _remote_cipher(options: str | None) -> str | None:
    if not options:
        return None
    cipher = _options_extract(options, "cipher")
    return None if cipher in (None, "[null-cipher]", "BF-CBC") else cipher
