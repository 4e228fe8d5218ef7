"""The generated Python bindings against the real cdylib and a live souk-server on loopback.

Run by scripts/test-bindings, which builds the library, generates the bindings and sets:
  SOUK_BINDINGS_PYTHON  directory holding the generated `souk` module and the .so
  SOUK_SERVER_BIN       the souk-server binary this test starts
  SOUK_VECTORS          protocol/test-vectors/identity.json
  SOUK_ESPLORA_BIN      the souk-testkit-esplora binary (the chain stand-in) this test starts
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.environ["SOUK_BINDINGS_PYTHON"])

import souk  # noqa: E402  (the generated module)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A souk-server process on a loopback port with its own data directory."""

    def __enter__(self):
        self.dir = tempfile.TemporaryDirectory()
        self.url = f"http://127.0.0.1:{free_port()}"
        # The log goes to a file: a pipe nobody reads would fill up and stall the server.
        self.log = open(os.path.join(self.dir.name, "server.log"), "w+b")
        self.proc = subprocess.Popen(
            [os.environ["SOUK_SERVER_BIN"], "serve",
             "--listen", self.url.removeprefix("http://"),
             "--data-dir", self.dir.name, "--grpc-addr", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL, stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError("souk-server exited: " + self.log.read().decode(errors="replace"))
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("souk-server did not become ready within 60 s")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.dir.cleanup()


class LiveChain:
    """The Esplora-shaped chain stand-in (souk-testkit-esplora): every broadcast transaction is
    judged by Bitcoin Core's script interpreter. It stops when its stdin closes."""

    def __enter__(self):
        self.proc = subprocess.Popen(
            [os.environ["SOUK_ESPLORA_BIN"], "regtest"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"souk-testkit-esplora said {line!r}")
        self.url = line.removeprefix("listening on ")
        return self

    def post(self, path, body):
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(),
            headers={"content-type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.load(r)

    def __exit__(self, *exc):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.proc.stdout.close()


async def deliver_message(client, book, message):
    """Posts a message an order step made and takes it out of the book's outbox."""
    report = await client.send_message(message.servers, message.sealed)
    if not report.delivered:
        raise AssertionError(f"not delivered: {report.deliveries}")
    book.delivered(message.sealed)


async def read_inbox(client, server_url, wallet, book):
    """Reads the wallet's inbox at one server into its order book and acknowledges it all."""
    batch = await client.fetch_inbox(wallet, server_url)
    outcomes = [book.receive(m.sealed) for m in batch.messages]
    if batch.messages:
        await client.acknowledge(wallet, server_url, batch.token, [m.id for m in batch.messages])
    return outcomes


def vector():
    with open(os.environ["SOUK_VECTORS"]) as f:
        return json.load(f)["vectors"][0]


def draft(slug):
    return souk.ListingDraft(
        slug=slug,
        listing_type=souk.ListingType.PHYSICAL,
        title="Walnut desk lamp with linen shade",
        description="Turned from one piece of walnut. E27 socket, 2 m cable.",
        price=souk.Price(amount=8900, currency="EUR", divisibility=2),
        shipping=[souk.ShippingOption(
            name="Europe", regions=["DE", "FR", "PT"],
            services=[souk.ShippingService(name="Standard", price=1200)])],
        tags=["lamp", "walnut"],
        category="home/lighting",
        condition=souk.Condition.NEW,
    )


class BindingsTest(unittest.TestCase):
    def test_wallet_restores_the_vector_identity(self):
        v = vector()
        wallet = souk.Wallet.restore(v["mnemonic"], "")
        self.assertEqual(wallet.identity_address(), v["identity_address"])
        self.assertEqual(wallet.identity_hex(), v["identity_public_key_hex"])
        self.assertEqual(wallet.export_mnemonic(), v["mnemonic"])

    def test_bad_input_raises_typed_errors(self):
        with self.assertRaises(souk.WalletError.InvalidMnemonic):
            souk.Wallet.restore("abandon " * 11 + "zebra", "")
        with self.assertRaises(souk.WalletError.InvalidSeed):
            souk.Wallet.from_seed(b"short")
        wallet = souk.Wallet.restore(vector()["mnemonic"], "")
        bad = draft("Not A Slug")
        with self.assertRaises(souk.WalletError.InvalidDraft) as caught:
            wallet.sign_listing(bad)
        self.assertEqual(caught.exception.field, "listing.slug")
        with self.assertRaises(souk.ClientError.InvalidUrl):
            souk.Client(souk.ClientConfig(servers=["ftp://nope"]))

    def test_sign_publish_search_and_get_back_verified(self):
        v = vector()
        wallet = souk.Wallet.restore(v["mnemonic"], "")
        signed = wallet.sign_listing(draft("walnut-lamp"))
        self.assertEqual(signed.signer, v["identity_address"])
        with LiveServer() as server:
            client = souk.Client(souk.ClientConfig(servers=[server.url], timeout_ms=5000))

            async def flow():
                outcome = await client.publish(signed.bytes)
                self.assertTrue(outcome.status.is_accepted(), outcome.status)
                self.assertEqual(outcome.id, signed.id)

                page = await client.search(souk.SearchQuery(
                    text="walnut lam", listing_type=souk.ListingType.PHYSICAL,
                    ships_to="PT", sort=souk.Sort.RELEVANCE))
                self.assertEqual(page.dropped, [])
                self.assertEqual([h.id for h in page.hits], [signed.id])
                hit = page.hits[0]
                self.assertEqual(hit.seller, v["identity_address"])
                self.assertEqual(hit.listing.price.amount, 8900)
                self.assertEqual(hit.listing.title, "Walnut desk lamp with linen shade")

                got = await client.get_listing(signed.id)
                self.assertTrue(got.current)
                self.assertEqual(bytes(got.envelope), bytes(signed.bytes))

                with self.assertRaises(souk.ClientError.NotFound):
                    await client.get_listing("00" * 32)

            asyncio.run(flow())


class OrderBindingsTest(unittest.TestCase):
    """An order placed, delivered through a live inbox, confirmed and answered, from Python."""

    def test_an_order_travels_through_the_inbox_and_is_confirmed(self):
        seller = souk.Wallet.restore(vector()["mnemonic"], "")
        buyer = souk.Wallet.generate(12, "")
        listing = seller.sign_listing(draft("oak-stool"))
        with LiveServer() as server, tempfile.TemporaryDirectory() as tmp:
            client = souk.Client(souk.ClientConfig(servers=[server.url], timeout_ms=5000))
            buyer_book = souk.OrderBook.open(os.path.join(tmp, "buyer.db"), buyer, "regtest")
            seller_book = souk.OrderBook.open(os.path.join(tmp, "seller.db"), seller, "regtest")
            self.assertEqual(buyer_book.list(), [])

            async def deliver(book, message):
                await deliver_message(client, book, message)

            async def read(wallet, book):
                return await read_inbox(client, server.url, wallet, book)

            async def flow():
                order = buyer_book.place_order(souk.OrderDraft(
                    listing=listing.bytes, skus=[0], quantities=[1],
                    shipping_address="Rua Augusta 1, Lisboa", amount_sats=120_000,
                    seller_inbox=[server.url], reply_inbox=[server.url]))
                self.assertEqual(order.recipient, seller.identity_address())
                self.assertEqual([m.sealed for m in buyer_book.outbox()], [order.sealed])
                await deliver(buyer_book, order)
                self.assertEqual(buyer_book.outbox(), [])
                [got] = await read(seller, seller_book)
                self.assertEqual(got.outcome, "new_order")
                self.assertEqual(got.order_id, order.order_id)
                await deliver(seller_book, seller_book.confirm(order.order_id))
                [answer] = await read(buyer, buyer_book)
                self.assertEqual((answer.outcome, answer.state), ("moved", "awaiting_payment"))
                [mine] = buyer_book.list()
                self.assertEqual((mine.role, mine.state, mine.payment), ("buyer", "awaiting_payment", "direct"))
                self.assertEqual(mine.payment_address, buyer_book.payment_address(order.order_id))
                # Acknowledged messages are gone from the inbox.
                self.assertEqual((await client.fetch_inbox(buyer, server.url)).messages, [])
                with self.assertRaises(souk.OrderFlowError.Refused) as caught:
                    seller_book.confirm(order.order_id)
                self.assertEqual(caught.exception.code, "illegal_transition")

            asyncio.run(flow())

    def test_order_errors_are_typed_with_stable_codes(self):
        wallet = souk.Wallet.generate(12, "")
        with tempfile.TemporaryDirectory() as tmp:
            book = souk.OrderBook.open(os.path.join(tmp, "orders.db"), wallet, "regtest")
            with self.assertRaises(souk.OrderFlowError.Refused) as caught:
                souk.OrderBook.open(os.path.join(tmp, "other.db"), wallet, "mainnet")
            self.assertEqual(caught.exception.code, "order_mismatch")
            with self.assertRaises(souk.OrderFlowError.Refused) as caught:
                book.receive(b"\xff\xff")
            self.assertEqual(caught.exception.code, "message_malformed")
            with self.assertRaises(souk.OrderFlowError.Refused) as caught:
                book.confirm("00" * 32)
            self.assertEqual(caught.exception.code, "unknown_order")
            with self.assertRaises(souk.OrderFlowError.Refused) as caught:
                book.confirm("not-an-id")
            self.assertEqual(caught.exception.code, "invalid_argument")


class ModeratedPurchaseTest(unittest.TestCase):
    """One full moderated purchase from Python: the buyer picks the listing's moderator by its
    offer and verified ratings, sees the escrow's miner fee, orders, pays into the 2-of-3 escrow
    on the chain stand-in, the seller ships with a signed release, the buyer completes it (the
    stand-in's script interpreter accepts the spend) and rates the seller."""

    def test_a_moderated_purchase_from_order_to_rating(self):
        seller = souk.Wallet.generate(12, "")
        buyer = souk.Wallet.generate(12, "")
        moderator = souk.Wallet.generate(12, "")
        price = 150_000
        with LiveServer() as server, LiveChain() as chain, tempfile.TemporaryDirectory() as tmp:
            client = souk.Client(souk.ClientConfig(servers=[server.url], timeout_ms=5000))
            books = {
                name: souk.OrderBook.open(os.path.join(tmp, f"{name}.db"), wallet, "regtest")
                for name, wallet in [("buyer", buyer), ("seller", seller), ("moderator", moderator)]
            }

            async def deliver(book, message):
                await deliver_message(client, book, message)

            async def read(wallet, book):
                return [(o.outcome, o.state)
                        for o in await read_inbox(client, server.url, wallet, book)]

            def state(book, order_id):
                return next(o.state for o in book.list() if o.id == order_id)

            async def flow():
                offer = souk.ModeratorOffer(
                    fee_type=souk.FeeType.FIXED_PLUS_PERCENTAGE,
                    fee_fixed=souk.Price(amount=5_000, currency="BTC", divisibility=8),
                    fee_percentage_bp=150, languages=["en", "pt"],
                    terms="I decide within 7 days.", accepted_currencies=["BTC"],
                    escrow_xpub=moderator.moderation_xpub("regtest"))
                await client.publish(moderator.sign_profile(souk.ProfileDraft(
                    store_name="Fair Judge", inbox_servers=[server.url], moderator=offer)).bytes)
                await client.publish(seller.sign_profile(souk.ProfileDraft(
                    store_name="Oak & Iron", inbox_servers=[server.url])).bytes)
                item = draft("oak-bench")
                item.accepted_moderators = [moderator.identity_address()]
                listing = seller.sign_listing(item)
                await client.publish(listing.bytes)

                # The buyer chooses among the listing's moderators.
                verified = await client.get_listing(listing.id)
                [choice] = await client.moderators_for_listing(verified)
                self.assertEqual((choice.address, choice.name), (moderator.identity_address(), "Fair Judge"))
                self.assertEqual((choice.offer.fee_percentage_bp, choice.offer.languages), (150, ["en", "pt"]))
                self.assertEqual(choice.ratings.count, 0)
                estimate = books["buyer"].escrow_fee_estimate(price, choice.profile, 2)
                self.assertFalse(estimate.refused or estimate.warn, estimate)
                self.assertEqual(estimate.cap_sats, 7_500)
                with self.assertRaises(souk.OrderFlowError.Refused) as caught:
                    books["buyer"].place_order(souk.OrderDraft(
                        listing=listing.bytes, skus=[0], quantities=[1], amount_sats=price,
                        moderator_profile=choice.profile, seller_inbox=[server.url],
                        reply_inbox=[server.url], fee_rate_sat_vb=200))
                self.assertEqual(caught.exception.code, "fee_too_high")
                self.assertEqual(books["buyer"].list(), [])

                order = books["buyer"].place_order(souk.OrderDraft(
                    listing=listing.bytes, skus=[0], quantities=[1], amount_sats=price,
                    shipping_address="Rua Augusta 1, Lisboa", moderator_profile=choice.profile,
                    seller_inbox=[server.url], reply_inbox=[server.url], fee_rate_sat_vb=2))
                oid = order.order_id
                await deliver(books["buyer"], order)
                self.assertEqual(await read(seller, books["seller"]), [("new_order", None)])
                await deliver(books["seller"], books["seller"].confirm(oid))
                self.assertEqual(await read(buyer, books["buyer"]), [("moved", "awaiting_payment")])

                # The buyer pays the escrow address it recomputed (from outside, on the stand-in).
                address = books["buyer"].payment_address(oid)
                self.assertTrue(address.startswith("bcrt1q"), address)
                chain.post("/regtest/pay", {"address": address, "sats": price})
                for name in ("buyer", "seller"):
                    self.assertEqual(await books[name].watch_chain(chain.url), [oid])
                    self.assertEqual(state(books[name], oid), "funded")
                await deliver(books["buyer"], books["buyer"].notify_payment(oid))
                self.assertEqual(await read(seller, books["seller"]), [("noted", None)])
                chain.post("/regtest/mine", {"blocks": 1})
                for name in ("buyer", "seller"):
                    await books[name].watch_chain(chain.url)
                    self.assertEqual(state(books[name], oid), "confirmed")

                fee_rate = await books["seller"].fee_rate(chain.url, 6)
                await deliver(books["seller"], books["seller"].ship(oid, "Posted, tracking PT123", fee_rate))
                self.assertEqual(await read(buyer, books["buyer"]), [("moved", "shipped")])
                done = await books["buyer"].complete(oid, chain.url)
                await deliver(books["buyer"], done)
                self.assertEqual(await read(seller, books["seller"]), [("moved", "completed")])
                self.assertEqual(state(books["buyer"], oid), "completed")

                rating = books["buyer"].rate(oid, False, [5, 5, 4, 5, 5], "Solid bench, well packed")
                outcome = await client.publish(rating.bytes)
                self.assertTrue(outcome.status.is_accepted(), outcome.status)
                ratings = await client.verified_ratings(seller.identity_address(), False)
                self.assertEqual((ratings.count, ratings.refused), (1, 0))
                self.assertEqual(ratings.reviews, ["Solid bench, well packed"])
                kinds = [(m.sender, m.kind) for m in books["seller"].conversation(oid)]
                self.assertEqual(kinds, [("buyer", "order"), ("seller", "confirmation"),
                                         ("buyer", "payment"), ("seller", "fulfillment"),
                                         ("buyer", "completion")])
                self.assertEqual(books["buyer"].outbox(), [])

            asyncio.run(flow())


if __name__ == "__main__":
    unittest.main(verbosity=2)
