/* AEAD for DATA_V2 (proto/datachannel.py; ovpn's crypto_aead.c): one EVP context per key
 * and direction, keyed once; per packet only the nonce (packet-id + the 8-byte implicit IV)
 * and the 8-byte AAD go in (the epoch format, epoch.c, passes its own nonce and AAD). The
 * tag travels before the ciphertext on the wire, so it is taken from / given to its own
 * place instead of being moved behind the ciphertext. */
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

int aead_ctx_init(EVP_CIPHER_CTX **ctx, int cipher, const uint8_t *key, int enc)
{
    *ctx = EVP_CIPHER_CTX_new();
    if (!*ctx)
        return -1;
    if (EVP_CipherInit_ex(*ctx, CIPHERS[cipher].get(), NULL, NULL, NULL, enc) != 1
        || EVP_CIPHER_CTX_ctrl(*ctx, EVP_CTRL_AEAD_SET_IVLEN, AEAD_NONCE_LEN, NULL) != 1
        || EVP_CipherInit_ex(*ctx, NULL, NULL, key, NULL, enc) != 1) {
        EVP_CIPHER_CTX_free(*ctx);
        *ctx = NULL;
        return -1;
    }
    return 0;
}

int aead_ctx_seal(EVP_CIPHER_CTX *ctx, const uint8_t *nonce, const uint8_t *aad, int aad_len,
                  uint8_t *data, int n, uint8_t *tag)
{
    int len;
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1
        || EVP_EncryptUpdate(ctx, NULL, &len, aad, aad_len) != 1
        || EVP_EncryptUpdate(ctx, data, &len, data, n) != 1
        || EVP_EncryptFinal_ex(ctx, data + len, &len) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, AEAD_TAG_LEN, tag) != 1)
        return -1;
    return 0;
}

int aead_ctx_open(EVP_CIPHER_CTX *ctx, const uint8_t *nonce, const uint8_t *aad, int aad_len,
                  uint8_t *data, int n, const uint8_t *tag)
{
    int len;
    uint8_t t[AEAD_TAG_LEN];
    memcpy(t, tag, AEAD_TAG_LEN); /* the tag may sit where the plaintext goes */
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1
        || EVP_DecryptUpdate(ctx, NULL, &len, aad, aad_len) != 1
        || EVP_DecryptUpdate(ctx, data, &len, data, n) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, AEAD_TAG_LEN, t) != 1
        || EVP_DecryptFinal_ex(ctx, data + len, &len) != 1)
        return -1;
    return 0;
}

int aead_init(struct aead_dir *d, int cipher, const uint8_t *key, const uint8_t *tail, int enc)
{
    memset(d->nonce, 0, 4);
    memcpy(d->nonce + 4, tail, AEAD_NONCE_TAIL_LEN);
    return aead_ctx_init(&d->ctx, cipher, key, enc);
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
    put32(d->nonce, pid);
    return aead_ctx_seal(d->ctx, d->nonce, aad, DATA_V2_AAD_LEN, data, n, tag);
}

int aead_open(struct aead_dir *d, uint32_t pid, const uint8_t *aad, uint8_t *data, int n,
              const uint8_t *tag)
{
    put32(d->nonce, pid);
    return aead_ctx_open(d->ctx, d->nonce, aad, DATA_V2_AAD_LEN, data, n, tag);
}
