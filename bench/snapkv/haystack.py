"""haystack: deterministic filler prose for the needle-in-a-haystack benchmark, composed from a
bank of hand-written sentences and a few templates with varied slots (no downloads). The same
seed gives the same text on every machine; no sentence mentions passphrases, vaults or codes."""

import random

BANK = """
The harbour was quiet in the early morning, and only a few gulls circled above the boats.
Most of the fishermen had left before dawn to reach the deeper water beyond the cape.
An old lighthouse stands at the end of the northern pier, painted white with a red band.
Children from the village often gather shells along the shore when the tide is low.
The bakery on the corner opens at six, and the smell of fresh bread fills the whole street.
Its owner learned the trade from her grandmother, who kept the same oven for forty years.
Rye loaves sell out first, followed by the small sweet rolls dusted with sugar.
In autumn the hills behind the town turn copper and gold as the beech trees change colour.
Walkers follow a narrow path that climbs through the woods to a ridge with a wide view.
On clear days you can see the chain of islands stretching toward the horizon.
The river that runs through the valley was once used to carry timber down to the sea.
Today it is mostly kayakers and anglers who share its slow green water.
A stone bridge with three arches crosses the river near the old mill.
The mill itself was turned into a small museum about the history of the valley.
Inside, visitors can see the great wooden wheel and the grinding stones it used to turn.
Farmers in the region grow barley, potatoes and a hardy kind of cabbage.
Sheep graze on the higher slopes, where the grass is thin but the air is fresh.
Every spring the lambs are counted and marked before they are moved to summer pastures.
The weather here changes quickly, and a sunny morning can end in a cold, driving rain.
Locals say that if you do not like the weather, you only need to wait ten minutes.
A small library occupies the upper floor of the town hall.
It holds local newspapers going back more than a century, bound in heavy leather volumes.
The librarian is happy to help anyone searching for records of their family.
On Thursday evenings a reading group meets there to discuss a novel chosen by vote.
Last month they read a long book about a sea voyage, and the discussion lasted past ten.
The railway reached the valley late, after years of argument about the cost of the tunnel.
When the first train arrived, the whole town came out to watch it pull into the station.
The line now carries a few passenger trains each day and a freight train on Mondays.
From the window of the carriage you can watch the river, the fields and the distant peaks.
Astronomers sometimes visit the moor because the sky there is unusually dark.
Far from city lights, the band of the galaxy is easy to see on a moonless night.
A retired teacher built a small observatory in his garden with the help of his neighbours.
He invites school classes to look at the rings of Saturn and the craters of the moon.
The market square fills with stalls every Saturday from early morning until noon.
You can buy honey, cheese, knitted scarves, wooden spoons and second-hand books.
A man with a barrel organ plays the same three tunes, and nobody seems to mind.
The cheese maker from the upper farm brings wheels of hard cheese aged in a cave.
She explains that the flavour depends on the grass the cows ate in a given season.
Beekeeping has become popular again, and several gardens now have a hive or two.
Bees prefer sheltered spots facing the morning sun, away from strong winds.
A good colony can produce a surprising amount of honey in a warm summer.
In winter the bees cluster together and keep the queen warm by shivering their wings.
The gardens in the valley are famous for their roses, which bloom in early July.
Gardeners trade cuttings and seeds and argue gently about the best way to prune.
Some swear by seaweed as a fertiliser, collected from the beach after storms.
Slugs are the common enemy, and every gardener has a favourite trick to keep them away.
The old schoolhouse has a bell that still rings at nine each morning.
Pupils walk to school along lanes lined with hawthorn and wild blackberries.
In September they pick the berries on the way home and arrive with purple fingers.
The teacher keeps a jar of them on her desk and makes jam with the class.
A storm last winter brought down several trees along the coast road.
Volunteers spent a weekend clearing the branches and replanting young oaks.
The council promised to repair the sea wall before the next season of gales.
Engineers studied the currents to decide where the new stones should be placed.
A painter rents a studio above the harbour office and works with the window open.
Her pictures show the boats, the nets and the changing light on the water.
Tourists buy small prints of her work, while the large canvases go to galleries in the city.
She says the colour of the sea is never the same on two days in a row.
The castle on the headland is only a ruin now, but its outer walls are still impressive.
It was built to guard the entrance to the bay against raiders from the north.
Sheep wander among the fallen stones, and ravens nest in the broken tower.
A guide tells the story of a long siege during which the defenders ate their own boots.
Cooking in the region is simple and filling, with plenty of fish, oats and root vegetables.
A favourite winter dish is a thick soup of smoked fish, potatoes, onions and milk.
Oatcakes are eaten with almost everything, from cheese to marmalade.
On special occasions families bake a dark fruit cake that keeps for months.
The village choir practises in the church hall every Tuesday evening.
They sing old songs about the sea, the harvest and lovers separated by war.
At the summer festival the choir performs on a stage built from hay bales.
Their conductor is a former sailor with a deep voice and a patient manner.
A ferry crosses to the largest island twice a day when the weather allows.
The crossing takes about an hour, and dolphins sometimes follow the boat.
On the island there is a single shop, a post office and a chapel with a slate roof.
Puffins nest on the cliffs in early summer, and birdwatchers come from far away to see them.
The post office also sells stamps, newspapers, fishing line and birthday cards.
Letters leave the island on the afternoon ferry and reach the mainland by evening.
In bad weather the ferry stays in harbour, and the islanders simply wait.
They keep good stores of flour, tea and candles for exactly that reason.
Foxes are often seen at dusk crossing the fields near the edge of the woods.
Badgers are shyer and leave only their tracks and the neat holes of their setts.
Owls call from the tall pines behind the churchyard on still nights.
In spring the woods are carpeted with bluebells, and the air smells sweet and damp.
The doctor's surgery is open three mornings a week, and a nurse visits on the other days.
For anything serious, patients travel to the hospital in the county town.
An ambulance boat serves the islands, crewed by volunteers who train every month.
The crew once rescued a family whose sailing boat had lost its mast in a squall.
The knitting circle meets in the café, where the owner keeps a corner table free for them.
They make hats and blankets for the hospital and sweaters for the lifeboat crew.
Patterns are passed down from mother to daughter, each family with its own design.
A sweater washed up on the shore could once be traced to its wearer by its stitches.
The local football team plays on a pitch that slopes noticeably toward the river.
Visiting teams complain that the home side always chooses to play downhill in the second half.
Supporters stand along the fence with flasks of tea, shouting advice to the referee.
The team has not won the county cup for many years, but hope never fades.
The bookshop sells new and used books, and the owner reads nearly everything that comes in.
She can recommend a novel to suit almost any mood, given a few minutes of conversation.
A cat sleeps in the window among the travel guides and is rarely disturbed.
Regular customers leave lists of books they are looking for, and she remembers every one.
The wind farm on the ridge was controversial when it was first proposed.
Some people thought the turbines would spoil the view, while others welcomed the income.
Now they turn slowly above the heather, and most residents barely notice them.
On a still day the blades stand motionless, like tall white flowers.
The blacksmith's forge is still in use, though horses are rarely shod there now.
Instead the smith makes gates, railings and tools for the farms and gardens.
Visitors watch as he heats the iron until it glows orange and then hammers it into shape.
He says the trick is knowing when the metal is ready by its colour alone.
Mapmakers surveyed the valley carefully in the last century, walking every field and stream.
Their maps show old paths, wells and boundary stones that have since disappeared.
Historians use them to understand how the land was divided among the farms.
Some of the field names on the maps are so old that nobody knows what they mean.
A long-distance footpath passes through the town on its way along the coast.
Hikers stop at the inn for a hot meal and a dry bed after a day in the wind.
The innkeeper keeps a book in which walkers write their names and their route.
Some entries go back decades, written by people who walked the path in their youth.
The tide tables are printed in the local paper and pinned up in the harbour office.
Anyone walking on the sands must know when the water will return.
The flat sands are beautiful but dangerous, because the tide comes in faster than a person can run.
Signs at the beach warn visitors not to walk out to the island at low water without a guide.
An annual regatta brings sailing boats from all along the coast.
Races are held over three days, with a dinner and a dance on the final night.
The oldest boat taking part was built more than a hundred years ago and still sails well.
Its owner spends every winter repairing the hull and varnishing the mast.
Potters have worked in the valley for centuries, using clay from the riverbank.
Their bowls and jugs are glazed in a deep blue that has become famous in the region.
One workshop offers classes, and beginners are surprised by how hard it is to centre the clay.
Most of the first pots collapse, but by the end of the week everyone takes one home.
The weather station on the hill records rain, wind and temperature every hour.
Its records show that the wettest month is usually October and the driest is April.
The highest wind ever recorded there blew the roof off a barn in the next valley.
Farmers check the forecast each evening before deciding whether to cut the hay.
A small brewery opened in an old warehouse near the station a few years ago.
It makes a pale ale, a dark stout and a seasonal beer flavoured with heather.
The brewers use water from a spring that rises on the hillside above the town.
On Friday evenings the taproom fills with locals and the occasional lost tourist.
The church has a tall spire that sailors once used as a landmark when entering the bay.
Inside there are carved wooden pews and a window of coloured glass showing a ship in a storm.
The organ was restored recently with money raised by concerts and cake sales.
On Sunday mornings its music drifts across the square and down to the water.
Mushroom pickers go into the woods in autumn, each with their own favourite places.
They know which kinds are delicious and which must never be touched.
Beginners are told to go with an expert and never eat anything they cannot identify.
The best finds are often near old trees, hidden under a layer of fallen leaves.
The primary school has a garden where each class grows vegetables in a raised bed.
Pupils learn to sow beans, thin carrots and protect lettuces from hungry birds.
At the end of term they cook a meal together from what they have grown.
Parents are invited, and the soup is always praised whatever it tastes like.
The coast road is narrow and winding, with passing places every few hundred metres.
Drivers wave to each other as they pull in to let oncoming cars pass.
In summer the road is busy with caravans, and patience is needed on the steep hills.
The view from the highest bend is said to be the finest in the county.
An old woman in the village remembers the days before electricity reached the farms.
She describes evenings by lamplight, with stories told around the kitchen fire.
Water came from a well in the yard, and washing day took from dawn until dark.
She says life was harder then but people had more time to talk.
The local museum holds a collection of tools, costumes and photographs from those years.
One room is arranged as a kitchen of the time, with an iron range and a dresser of plates.
Schoolchildren are fascinated by the wooden washboard and the heavy flat irons.
The museum is run entirely by volunteers and is open on weekend afternoons.
Seals haul out on the rocks near the point and bask in the afternoon sun.
Their pups are born in autumn, white and fluffy, and stay on land for several weeks.
Visitors are asked to keep their distance so that the mothers are not disturbed.
A volunteer group counts the pups every year and reports the numbers to scientists.
The town band plays on the bandstand in the park on summer Sunday afternoons.
Families spread blankets on the grass and children dance to the marches.
The band has played at every royal visit, every wedding and every harvest fair for generations.
Its oldest member has played the tuba for over fifty years and shows no sign of stopping.
Wool from the hill sheep was once spun and woven in the valley's many small mills.
Most of the mills closed long ago, but one still produces tweed on restored looms.
The cloth is dyed with colours taken from the landscape: heather, bracken, moss and stone.
Tailors in distant cities still order it for jackets that last a lifetime.
A new cycle path follows the line of an old railway through cuttings and over viaducts.
It is popular with families because it is flat and free from traffic.
Along the way there are benches, picnic tables and boards describing the local wildlife.
Cyclists can stop at a café in the old station building for cake and a cup of tea.
The harbour master knows every boat by sight and keeps a close eye on the weather.
When a gale is coming he walks along the pier checking that every mooring is secure.
In his office there are charts, a radio and a barometer that once belonged to his father.
He has seen the harbour change from a busy fishing port to a place of pleasure boats.
""".strip().splitlines()

# Template sentences with varied slots: a few thousand distinct combinations.
_PEOPLE = ["the farmer", "a young carpenter", "the postman", "an elderly fisherman", "the baker's son",
           "a visiting botanist", "the schoolteacher", "a retired engineer", "the ferry captain",
           "a local historian", "the innkeeper", "a travelling musician", "the shepherd",
           "a student from the city", "the miller's daughter", "a quiet painter"]
_ACTS = ["walked slowly along", "spent the afternoon beside", "took photographs of",
         "wrote a short poem about", "sketched", "cleared the weeds from", "told a long story about",
         "went looking for birds near", "repaired the fence beside", "had lunch near",
         "stopped to rest by", "led a group of visitors to"]
_PLACES = ["the old stone bridge", "the edge of the pine wood", "the ruined chapel", "the river bend",
           "the top of the ridge", "the sheltered cove", "the village green", "the abandoned quarry",
           "the lane behind the church", "the upper meadow", "the little waterfall", "the salt marsh",
           "the orchard by the mill", "the harbour wall"]
_TIMES = ["in the late afternoon", "early on a misty morning", "just before the rain began",
          "on a bright winter day", "after the market closed", "during the long summer evening",
          "on the first warm day of spring", "while the tide was going out"]
_OBS = ["The air smelled of salt and wet grass.", "A heron stood perfectly still in the shallows.",
        "Clouds moved quickly over the hills from the west.", "Somewhere a dog was barking at nothing.",
        "The light turned the water the colour of pewter.", "Swallows flew low over the fields.",
        "Smoke rose straight up from a cottage chimney.", "The only sound was the wind in the reeds.",
        "A tractor worked its way slowly up the far slope.", "Bells rang faintly from across the bay."]
_THINGS = ["apples", "wool", "firewood", "honey", "pottery", "fresh fish", "barley", "cheese",
           "wildflowers", "old books", "baskets", "lamb"]
_FACTS = [
    "Trade in {t} was once the main source of income for several families in the valley.",
    "At the autumn fair there is always a competition for the best {t}.",
    "Many households still prefer to buy {t} directly from their neighbours.",
    "In the old account books, {t} appears more often than any other item.",
    "A cart loaded with {t} used to travel to the county town every week.",
]


def _templated(r):
    kind = r.random()
    if kind < 0.6:
        s = "%s %s %s %s." % (r.choice(_PEOPLE), r.choice(_ACTS), r.choice(_PLACES), r.choice(_TIMES))
        return s[0].upper() + s[1:]
    if kind < 0.8:
        return r.choice(_OBS)
    return r.choice(_FACTS).format(t=r.choice(_THINGS))


def sentences(seed, n):
    """n filler sentences: the hand-written bank in a seeded order (cycled, reshuffled on each
    pass), interleaved with templated sentences (about one in three)."""
    r = random.Random(seed)
    out, pool = [], []
    while len(out) < n:
        if r.random() < 0.33:
            out.append(_templated(r))
            continue
        if not pool:
            pool = BANK[:]
            r.shuffle(pool)
        out.append(pool.pop())
    return out


def paragraph_breaks(seed, n):
    """Sentence indexes (1..n-1) before which a paragraph starts: every 3 to 7 sentences."""
    r = random.Random(seed + 1)
    breaks, i = set(), r.randint(3, 7)
    while i < n:
        breaks.add(i)
        i += r.randint(3, 7)
    return breaks


def compose(sents, breaks, insert_at=None, needle=None):
    """Joins sentences into prose paragraphs; with a needle, it goes in as a sentence of its
    own before sentence insert_at (0 = first, len = after the last)."""
    parts = []
    for i, s in enumerate(sents + [None]):
        if needle is not None and i == insert_at:
            parts.append((" ", needle))
        if s is None:
            break
        parts.append(("\n\n" if i in breaks else " ", s))
    text = ""
    for sep, s in parts:
        text += (sep if text else "") + s
    return text
