/* AEAD for DATA_V2 (proto/datachannel.py; ovpn's crypto_aead.c): one EVP context per key
 * and direction, keyed once; per packet only the nonce (packet-id + the 8-byte implicit IV)
 * and the 8-byte AAD go in. The tag travels before the ciphertext on the wire, so it is
 * taken from / given to its own place instead of being moved behind the ciphertext. */
#include "engine.h"

static const struct { int key_len; const EVP_CIPHER *(*get)(void); } CIPHERS[C_COUNT] = {
    [C_AES_128_GCM] = {16, EVP_aes_128_gcm},
    [C_AES_192_GCM] = {24, EVP_aes_192_gcm},
    [C_AES_256_GCM] = {32, EVP_aes_256_gcm},
    [C_CHACHA20_POLY1305] = {32, EVP_chacha20_poly1305},
};

int cipher_key_len(int cipher)
{
    return cipher >= 0 && cipher < C_COUNT ? CIPHERS[cipher].key_len : -1;
}

int aead_init(struct aead_dir *d, int cipher, const uint8_t *key, const uint8_t *tail, int enc)
{
    d->ctx = EVP_CIPHER_CTX_new();
    if (!d->ctx)
        return -1;
    memset(d->nonce, 0, 4);
    memcpy(d->nonce + 4, tail, AEAD_NONCE_TAIL_LEN);
    if (EVP_CipherInit_ex(d->ctx, CIPHERS[cipher].get(), NULL, NULL, NULL, enc) != 1
        || EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_SET_IVLEN, AEAD_NONCE_LEN, NULL) != 1
        || EVP_CipherInit_ex(d->ctx, NULL, NULL, key, NULL, enc) != 1) {
        aead_free(d);
        return -1;
    }
    return 0;
}

void aead_free(struct aead_dir *d)
{
    if (d->ctx)
        EVP_CIPHER_CTX_free(d->ctx);
    d->ctx = NULL;
}

int aead_seal(struct aead_dir *d, uint32_t pid, const uint8_t *aad, uint8_t *data, int n,
              uint8_t *tag)
{
    int len;
    put32(d->nonce, pid);
    if (EVP_EncryptInit_ex(d->ctx, NULL, NULL, NULL, d->nonce) != 1
        || EVP_EncryptUpdate(d->ctx, NULL, &len, aad, DATA_V2_AAD_LEN) != 1
        || EVP_EncryptUpdate(d->ctx, data, &len, data, n) != 1
        || EVP_EncryptFinal_ex(d->ctx, data + len, &len) != 1
        || EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_GET_TAG, AEAD_TAG_LEN, tag) != 1)
        return -1;
    return 0;
}

int aead_open(struct aead_dir *d, uint32_t pid, const uint8_t *aad, uint8_t *data, int n,
              const uint8_t *tag)
{
    int len;
    uint8_t t[AEAD_TAG_LEN];
    memcpy(t, tag, AEAD_TAG_LEN);
    put32(d->nonce, pid);
    if (EVP_DecryptInit_ex(d->ctx, NULL, NULL, NULL, d->nonce) != 1
        || EVP_DecryptUpdate(d->ctx, NULL, &len, aad, DATA_V2_AAD_LEN) != 1
        || EVP_DecryptUpdate(d->ctx, data, &len, data, n) != 1
        || EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_SET_TAG, AEAD_TAG_LEN, t) != 1
        || EVP_DecryptFinal_ex(d->ctx, data + len, &len) != 1)
        return -1;
    return 0;
}
