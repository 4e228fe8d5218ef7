// The generated Kotlin bindings on the JVM, against the real cdylib and a live souk-server on
// loopback. Run by scripts/test-bindings, which builds the library, generates the bindings,
// compiles this file with them and sets SOUK_SERVER_BIN, SOUK_VECTORS and SOUK_ESPLORA_BIN (the
// chain stand-in of the full moderated purchase).

import java.io.File
import java.net.HttpURLConnection
import java.net.ServerSocket
import java.net.URI
import java.nio.file.Files
import kotlin.system.exitProcess
import kotlinx.coroutines.runBlocking
import org.souk.core.*

var failures = 0

fun checkThat(name: String, condition: Boolean, detail: () -> String = { "" }) {
    if (condition) {
        println("ok   $name")
    } else {
        failures++
        println("FAIL $name ${detail()}")
    }
}

inline fun <reified E : Throwable> throws(name: String, block: () -> Unit): E? {
    try {
        block()
    } catch (e: Throwable) {
        if (e is E) {
            println("ok   $name (${e::class.simpleName}: ${e.message})")
            return e
        }
        failures++
        println("FAIL $name: expected ${E::class.simpleName}, got ${e::class.qualifiedName}: ${e.message}")
        return null
    }
    failures++
    println("FAIL $name: nothing was thrown")
    return null
}

/** A souk-server process on a loopback port with its own data directory. */
class LiveServer : AutoCloseable {
    private val dir = Files.createTempDirectory("souk-kotlin-test").toFile()
    val url: String
    private val process: Process

    init {
        val port = ServerSocket(0).use { it.localPort }
        url = "http://127.0.0.1:$port"
        process = ProcessBuilder(
            System.getenv("SOUK_SERVER_BIN"), "serve",
            "--listen", "127.0.0.1:$port", "--data-dir", dir.path, "--grpc-addr", "127.0.0.1:0",
        ).redirectOutput(ProcessBuilder.Redirect.DISCARD)
            .redirectError(ProcessBuilder.Redirect.INHERIT)
            .start()
        val deadline = System.nanoTime() + 60_000_000_000L
        var ready = false
        while (!ready && System.nanoTime() < deadline) {
            check(process.isAlive) { "souk-server exited with ${process.exitValue()}" }
            ready = try {
                val c = URI("$url/readyz").toURL().openConnection() as HttpURLConnection
                c.connectTimeout = 1000
                c.readTimeout = 1000
                c.responseCode == 200
            } catch (e: java.io.IOException) {
                Thread.sleep(100)
                false
            }
        }
        check(ready) { "souk-server did not become ready within 60 s" }
    }

    override fun close() {
        process.destroy()
        if (!process.waitFor(20, java.util.concurrent.TimeUnit.SECONDS)) process.destroyForcibly()
        dir.deleteRecursively()
    }
}

/** The Esplora-shaped chain stand-in (souk-testkit-esplora); it stops when its stdin closes. */
class LiveChain : AutoCloseable {
    private val process: Process = ProcessBuilder(System.getenv("SOUK_ESPLORA_BIN"), "regtest")
        .redirectError(ProcessBuilder.Redirect.INHERIT)
        .start()
    val url: String

    init {
        val line = process.inputStream.bufferedReader().readLine() ?: ""
        check(line.startsWith("listening on ")) { "souk-testkit-esplora said '$line'" }
        url = line.removePrefix("listening on ")
    }

    fun post(path: String, json: String) {
        val c = URI("$url$path").toURL().openConnection() as HttpURLConnection
        c.requestMethod = "POST"
        c.doOutput = true
        c.setRequestProperty("content-type", "application/json")
        c.outputStream.use { it.write(json.toByteArray()) }
        check(c.responseCode == 200) { "$path answered ${c.responseCode}" }
        c.inputStream.close()
    }

    override fun close() {
        process.outputStream.close()
        if (!process.waitFor(20, java.util.concurrent.TimeUnit.SECONDS)) process.destroyForcibly()
    }
}

fun vectorField(name: String): String {
    val text = File(System.getenv("SOUK_VECTORS")).readText()
    val match = Regex("\"$name\"\\s*:\\s*\"([^\"]+)\"").find(text)
        ?: error("no $name in the identity vectors")
    return match.groupValues[1]
}

fun draft(slug: String) = ListingDraft(
    slug = slug,
    listingType = ListingType.PHYSICAL,
    title = "Linen apron with leather straps",
    description = "Heavy washed linen, two pockets, adjustable straps.",
    price = Price(amount = 4500uL, currency = "EUR", divisibility = 2u),
    shipping = listOf(
        ShippingOption(
            name = "Europe",
            regions = listOf("DE", "NL"),
            services = listOf(ShippingService(name = "Standard", price = 600uL)),
        ),
    ),
    tags = listOf("apron", "linen"),
    category = "home/kitchen",
    condition = Condition.NEW,
)

fun main() {
    val mnemonic = vectorField("mnemonic")
    val address = vectorField("identity_address")
    val hex = vectorField("identity_public_key_hex")

    val wallet = Wallet.restore(mnemonic, "")
    checkThat("restores the vector identity", wallet.identityAddress() == address) { wallet.identityAddress() }
    checkThat("hex form of the identity", wallet.identityHex() == hex)

    throws<WalletException.InvalidMnemonic>("a bad phrase is a typed error") {
        Wallet.restore("abandon abandon abandon", "")
    }
    val bad = throws<WalletException.InvalidDraft>("an invalid draft names its field") {
        wallet.signListing(draft("Not A Slug"))
    }
    checkThat("the field is listing.slug", bad?.field == "listing.slug") { "${bad?.field}" }

    val signed = wallet.signListing(draft("linen-apron"))
    checkThat("signed by the vector identity", signed.signer == address)

    LiveServer().use { server ->
        val client = Client(ClientConfig(servers = listOf(server.url), timeoutMs = 5000uL))
        runBlocking {
            val outcome = client.publish(signed.bytes)
            checkThat("published", outcome.status is PublishStatus.Accepted) { "${outcome.status}" }

            val page = client.search(SearchQuery(text = "linen apr", shipsTo = "NL"))
            checkThat("nothing dropped", page.dropped.isEmpty()) { "${page.dropped}" }
            checkThat("found by text", page.hits.map { it.id } == listOf(signed.id)) { "${page.hits.map { it.id }}" }
            val hit = page.hits.first()
            checkThat("seller verified", hit.seller == address)
            checkThat("price from the signed listing", hit.listing.price.amount == 4500uL)

            val got = client.getListing(signed.id)
            checkThat("got back verified and current", got.current && got.envelope.contentEquals(signed.bytes))

            throws<ClientException.NotFound>("an absent id is NotFound") {
                runBlocking { client.getListing("00".repeat(32)) }
            }
        }
    }

    // Orders: placed, delivered through a live inbox, confirmed, answered.
    val buyer = Wallet.generate(12u, "")
    val listing = wallet.signListing(draft("cedar-box"))
    LiveServer().use { server ->
        val client = Client(ClientConfig(servers = listOf(server.url), timeoutMs = 5000uL))
        val dir = java.nio.file.Files.createTempDirectory("souk-orders")
        val buyerBook = OrderBook.open(dir.resolve("buyer.db").toString(), buyer, "regtest")
        val sellerBook = OrderBook.open(dir.resolve("seller.db").toString(), wallet, "regtest")
        runBlocking {
            val order = buyerBook.placeOrder(OrderDraft(
                listing = listing.bytes, skus = listOf(0u), quantities = listOf(1u),
                amountSats = 90_000uL, sellerInbox = listOf(server.url), replyInbox = listOf(server.url)))
            checkThat("order sent", client.sendMessage(order.servers, order.sealed).delivered)
            val batch = client.fetchInbox(wallet, server.url)
            val got = batch.messages.map { sellerBook.receive(it.sealed) }
            checkThat("the seller received the order", got.map { it.outcome } == listOf("new_order")) { "$got" }
            client.acknowledge(wallet, server.url, batch.token, batch.messages.map { it.id })
            val confirmation = sellerBook.confirm(order.orderId)
            client.sendMessage(confirmation.servers, confirmation.sealed)
            val answer = client.fetchInbox(buyer, server.url).messages.map { buyerBook.receive(it.sealed) }
            checkThat("the buyer's order awaits payment", answer.map { it.state } == listOf("awaiting_payment")) { "$answer" }
            val refused = throws<OrderFlowException.Refused>("confirming twice is refused") {
                sellerBook.confirm(order.orderId)
            }
            checkThat("with a stable code", refused?.code == "illegal_transition") { "${refused?.code}" }
        }
    }

    moderatedPurchase()

    if (failures > 0) {
        println("$failures check(s) failed")
        exitProcess(1)
    }
    println("all Kotlin binding checks passed")
}

/**
 * One full moderated purchase from Kotlin: the buyer picks the listing's moderator, orders into
 * the 2-of-3 escrow, pays on the chain stand-in, the seller ships with a signed release, the
 * buyer completes it (the stand-in's script interpreter accepts the spend) and rates the seller.
 */
fun moderatedPurchase() {
    val seller = Wallet.generate(12u, "")
    val buyer = Wallet.generate(12u, "")
    val moderator = Wallet.generate(12u, "")
    val price = 150_000uL
    LiveServer().use { server ->
        LiveChain().use { chain ->
            val client = Client(ClientConfig(servers = listOf(server.url), timeoutMs = 5000uL))
            val dir = java.nio.file.Files.createTempDirectory("souk-moderated")
            fun book(name: String, wallet: Wallet) =
                OrderBook.open(dir.resolve("$name.db").toString(), wallet, "regtest")
            val buyerBook = book("buyer", buyer)
            val sellerBook = book("seller", seller)
            runBlocking {
                suspend fun deliver(book: OrderBook, message: OutgoingMessage) {
                    check(client.sendMessage(message.servers, message.sealed).delivered)
                    book.delivered(message.sealed)
                }
                suspend fun read(wallet: Wallet, book: OrderBook): List<String?> {
                    val batch = client.fetchInbox(wallet, server.url)
                    val got = batch.messages.map { book.receive(it.sealed) }
                    if (batch.messages.isNotEmpty()) {
                        client.acknowledge(wallet, server.url, batch.token, batch.messages.map { it.id })
                    }
                    return got.map { it.state ?: it.outcome }
                }
                fun state(book: OrderBook, id: String) = book.list().first { it.id == id }.state

                val offer = ModeratorOffer(
                    feeType = FeeType.PERCENTAGE, feePercentageBp = 200u, languages = listOf("en"),
                    terms = "Evidence within 3 days.", acceptedCurrencies = listOf("BTC"), escrowXpub = moderator.moderationXpub("regtest"),
                )
                client.publish(moderator.signProfile(ProfileDraft(storeName = "Quick Arbiter", inboxServers = listOf(server.url), moderator = offer)).bytes)
                client.publish(seller.signProfile(ProfileDraft(storeName = "Apron Works", inboxServers = listOf(server.url))).bytes)
                val listing = seller.signListing(draft("waxed-apron").copy(acceptedModerators = listOf(moderator.identityAddress())))
                client.publish(listing.bytes)

                val choices = client.moderatorsForListing(client.getListing(listing.id))
                checkThat("the listing's moderator is offered", choices.map { it.address } == listOf(moderator.identityAddress())) { "$choices" }
                val choice = choices.first()
                val estimate = buyerBook.escrowFeeEstimate(price, choice.profile, 2u)
                checkThat("the escrow's miner fee is shown and allowed", !estimate.refused && estimate.feeSats > 0uL) { "$estimate" }

                val order = buyerBook.placeOrder(OrderDraft(
                    listing = listing.bytes, skus = listOf(0u), quantities = listOf(1u), amountSats = price,
                    moderatorProfile = choice.profile, sellerInbox = listOf(server.url),
                    replyInbox = listOf(server.url), feeRateSatVb = 2u))
                val id = order.orderId
                deliver(buyerBook, order)
                checkThat("the seller has the order", read(seller, sellerBook) == listOf("new_order"))
                deliver(sellerBook, sellerBook.confirm(id))
                checkThat("the buyer is asked to pay", read(buyer, buyerBook) == listOf("awaiting_payment"))

                chain.post("/regtest/pay", """{"address":"${buyerBook.paymentAddress(id)}","sats":$price}""")
                buyerBook.watchChain(chain.url)
                sellerBook.watchChain(chain.url)
                chain.post("/regtest/mine", """{"blocks":1}""")
                buyerBook.watchChain(chain.url)
                sellerBook.watchChain(chain.url)
                checkThat("both see the escrow confirmed", state(buyerBook, id) == "confirmed" && state(sellerBook, id) == "confirmed") {
                    "${state(buyerBook, id)} / ${state(sellerBook, id)}"
                }

                deliver(sellerBook, sellerBook.ship(id, "Shipped with PostNL", 2u))
                checkThat("the buyer sees it shipped", read(buyer, buyerBook) == listOf("shipped"))
                deliver(buyerBook, buyerBook.complete(id, chain.url))
                checkThat("the seller sees it completed", read(seller, sellerBook) == listOf("completed"))

                val rating = buyerBook.rate(id, false, listOf(5u, 5u, 5u, 4u, 5u), "Great apron")
                val published = client.publish(rating.bytes)
                checkThat("the rating is accepted", published.status is PublishStatus.Accepted) { "${published.status}" }
                val ratings = client.verifiedRatings(seller.identityAddress(), false)
                checkThat("one verified seller rating", ratings.count == 1uL && ratings.refused == 0uL) { "$ratings" }
            }
        }
    }
}
