import asyncio

from application.commands import ANONYMOUS, MakeDeposit, OpenAccount, SubmitPayment


def test_internal_payment_moves_money_and_balances(service):
    async def scenario():
        alice = await service.accounts.open(OpenAccount(owner="alice", currency="CNY"), ANONYMOUS)
        shop = await service.accounts.open(
            OpenAccount(owner="shop", currency="CNY", kind="merchant"), ANONYMOUS
        )
        await service.accounts.deposit(MakeDeposit(alice.id, "100.00", "d1"), ANONYMOUS)
        paid = await service.submit_payment(
            SubmitPayment(
                amount="40.50",
                currency="CNY",
                channel="internal",
                idempotency_key="p1",
                payer_account_id=alice.id,
                payee_account_id=shop.id,
            )
        )
        return alice, shop, paid

    alice, shop, paid = asyncio.run(scenario())
    assert paid.status == "succeeded"
    assert service.get_account(alice.id).balance_minor == 5950
    assert service.get_account(shop.id).balance_minor == 4050
    assert service.trial_balance()["totals"] == {"CNY": 0}
